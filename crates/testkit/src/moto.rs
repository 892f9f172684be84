//! moto (to be written).
