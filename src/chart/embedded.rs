//! Charts packed into the binary at build time (see `build.rs`): every
//! directory under `templates/` that holds a `Chart.yaml`, by directory name.

include!(concat!(env!("OUT_DIR"), "/embedded_charts.rs"));

/// The `.tgz` bytes of the embedded chart `name`.
pub fn archive(name: &str) -> Option<&'static [u8]> {
    CHARTS.iter().find(|(n, ..)| *n == name).map(|(_, b, _)| *b)
}

/// The embedded chart `name`'s `values.yaml` and `crds/` files as build.rs
/// parsed them (JSON text), when it could.
pub fn preparsed(name: &str) -> Option<&'static str> {
    CHARTS
        .iter()
        .find(|(n, ..)| *n == name)
        .and_then(|(.., p)| *p)
}

/// The names of the embedded charts, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    CHARTS.iter().map(|(n, ..)| *n)
}
