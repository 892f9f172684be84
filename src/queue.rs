//! Where jobs come from and results go (Trellis worker API, PostgreSQL, files).
