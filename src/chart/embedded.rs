//! Charts packed into the binary at build time (see `build.rs`): every
//! directory under `templates/` that holds a `Chart.yaml`, by directory name.

include!(concat!(env!("OUT_DIR"), "/embedded_charts.rs"));

/// The `.tgz` bytes of the embedded chart `name`.
pub fn archive(name: &str) -> Option<&'static [u8]> {
    CHARTS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of the embedded charts, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    CHARTS.iter().map(|(n, _)| *n)
}
