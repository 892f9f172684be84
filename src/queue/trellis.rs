//! The Trellis worker API client (to be written).
