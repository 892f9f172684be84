//! Checks that a job report (JSON) is valid against the report's JSON Schema
//! in `docs/report.schema.json`, which tendril generates from its report
//! types. Every test that gets a report from tendril checks it here.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

/// The schema file, relative to the workspace root.
pub const SCHEMA_PATH: &str = "docs/report.schema.json";

fn workspace_root() -> &'static Path {
    // crates/testkit → the workspace root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."))
}

struct Compiled {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

fn compiled() -> &'static Compiled {
    static SCHEMA: OnceLock<Compiled> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = workspace_root().join(SCHEMA_PATH);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("report.schema.json", doc)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let index = compiler
            .compile("report.schema.json", &mut schemas)
            .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", path.display()));
        Compiled { schemas, index }
    })
}

/// Panics, naming every violation, unless `report` is valid against the
/// report schema.
pub fn assert_valid_report(report: &Value) {
    let c = compiled();
    if let Err(e) = c.schemas.validate(report, c.index) {
        panic!(
            "the report does not match {SCHEMA_PATH}: {e:#}\nreport: {}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    }
}
