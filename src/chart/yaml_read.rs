//! How chart YAML is read: as Helm reads it (go-yaml v2 through
//! `sigs.k8s.io/yaml`), so the same text gives the same values.
//!
//! - YAML 1.1 numbers: `0644` is octal (420), as a file mode is meant;
//!   `08` (not octal) reads as 8.
//! - Numbers as JSON has them: a whole-number float (`2.0`, `1e3`) is an
//!   integer, as Helm prints it and an integer field accepts it.
//! - Comments are not captured (nothing reads them).
//!
//! A user's values file may not repeat a key (an error names it); rendered
//! output may, and the last one wins, as with Helm's output read by go-yaml
//! or PyYAML. `build.rs` includes this file too, so the chart YAML it reads
//! ahead of time is read the same way.

use serde_json::Value;

/// Options for the YAML a person writes: values files, `surface.yaml`.
pub(crate) fn values_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.emit_comments = false;
    o.legacy_octal_numbers = true;
    o
}

/// Options for YAML a template wrote (and a chart's static `crds/` files):
/// as [`values_options`], but a repeated key keeps the last value.
pub(crate) fn rendered_options() -> serde_saphyr::Options {
    let mut o = values_options();
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::LastWins;
    o
}

/// Writes every whole-number float in `v` as an integer (below 2^53, where
/// each one is exactly an i64).
pub(crate) fn whole_floats_to_integers(v: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < EXACT
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_to_integers),
        Value::Object(m) => m.values_mut().for_each(whole_floats_to_integers),
        _ => {}
    }
}
