//! apiserver (to be written).
