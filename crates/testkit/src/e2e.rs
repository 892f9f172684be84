//! e2e (to be written).
