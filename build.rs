//! Packs every chart under `templates/` (a directory holding a `Chart.yaml`)
//! into a reproducible `.tgz` in `OUT_DIR`, and writes the table
//! `embedded_charts.rs` that `src/chart/embedded.rs` includes. The packing code
//! is the library's own `src/chart/pack.rs`, so `tendril chart package` on the
//! same directory gives the same bytes.
//!
//! Next to each archive it writes the chart's plain YAML (`values.yaml` and the
//! files under `crds/`, which no template touches) already parsed, as JSON:
//! parsing that YAML is most of the cost of loading the chart, and it does not
//! depend on anything a render is given. When a file does not parse here,
//! nothing is precomputed for the chart and loading it reports the error.
//!
//! It also gives the binary what `tendril version` prints: the git commit
//! (`TENDRIL_GIT_COMMIT` when set, else `git rev-parse`, else `unknown`, so a
//! source tarball without `.git` still builds) and the target triple.

#[allow(dead_code)]
#[path = "src/chart/pack.rs"]
mod pack;

#[path = "src/chart/yaml_read.rs"]
mod yaml_read;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Parses YAML the way the library does (`chart::yaml_read`): `values.yaml`
/// as a person's values, `crds/` files as a chart's plain YAML.
fn parse_yaml_documents(text: &str, options: serde_saphyr::Options) -> Option<Vec<Value>> {
    let mut docs = serde_saphyr::from_multiple_with_options::<Value>(text, options).ok()?;
    docs.iter_mut()
        .for_each(yaml_read::whole_floats_to_integers);
    Some(docs)
}

/// `{"values": {...}, "crds": [{"path": "crds/x.yaml", "docs": [...]}]}` for the
/// chart's files, or `None` when one of them does not parse (or `values.yaml`
/// is not a mapping): the library then parses them itself and says what is wrong.
fn preparse(files: &[(String, Vec<u8>)]) -> Option<Value> {
    let mut values = Value::Object(Map::new());
    let mut crds = Vec::new();
    for (path, data) in files {
        let is_crd = path.starts_with("crds/")
            && (path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json"));
        if path != "values.yaml" && !is_crd {
            continue;
        }
        let text = std::str::from_utf8(data).ok()?;
        if path == "values.yaml" {
            if text.trim().is_empty() {
                continue;
            }
            let mut docs = parse_yaml_documents(text, yaml_read::values_options())?;
            if docs.len() != 1 {
                return None;
            }
            match docs.pop()? {
                Value::Null => {}
                v @ Value::Object(_) => values = v,
                _ => return None,
            }
        } else {
            let docs: Vec<Value> = if text.trim().is_empty() {
                Vec::new()
            } else {
                parse_yaml_documents(text, yaml_read::rendered_options())?
                    .into_iter()
                    .filter(|d| !d.is_null())
                    .collect()
            };
            crds.push(json!({ "path": path, "docs": docs }));
        }
    }
    Some(json!({ "values": values, "crds": crds }))
}

/// The commit the build is of: `TENDRIL_GIT_COMMIT`, else what git says, else `unknown`.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=TENDRIL_GIT_COMMIT");
    if let Ok(commit) = std::env::var("TENDRIL_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_string();
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_string();
    };
    // Optimised builds follow every commit; dev builds do not, so that a
    // commit does not rebuild the library (their commit may be stale).
    if std::env::var("PROFILE").as_deref() != Ok("debug")
        && let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"])
    {
        println!("cargo:rerun-if-changed={log}");
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

fn main() {
    println!("cargo:rustc-env=TENDRIL_GIT_COMMIT={}", git_commit());
    println!(
        "cargo:rustc-env=TENDRIL_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string())
    );
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=src/chart/pack.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| {
        panic!("OUT_DIR is not set: build.rs must run under cargo");
    }));
    let root = Path::new("templates");
    let mut charts: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(read) = std::fs::read_dir(root) {
        for entry in read.flatten() {
            let path = entry.path();
            if path.join("Chart.yaml").is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                charts.push((name.to_string(), path.clone()));
            }
        }
    }
    charts.sort();
    let mut table = String::from(
        "/// Charts packed at build time: (directory name under `templates/`, `.tgz` bytes).\n\
         /// and, when precomputed, its `values.yaml` and `crds/` parsed, as JSON.\n\
         pub static CHARTS: &[(&str, &[u8], Option<&str>)] = &[\n",
    );
    for (name, path) in &charts {
        let files = pack::collect_dir(path)
            .unwrap_or_else(|e| panic!("cannot read the chart {}: {e}", path.display()));
        let bytes = pack::pack_dir(path)
            .unwrap_or_else(|e| panic!("cannot pack the chart {}: {e}", path.display()));
        let file = out_dir.join(format!("{name}.tgz"));
        std::fs::write(&file, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        let preparsed = match preparse(&files) {
            Some(value) => {
                let file = out_dir.join(format!("{name}.parsed.json"));
                std::fs::write(&file, value.to_string())
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
                format!("Some(include_str!(concat!(env!(\"OUT_DIR\"), \"/{name}.parsed.json\")))")
            }
            None => "None".to_string(),
        };
        let _ = writeln!(
            table,
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.tgz\")), {preparsed}),"
        );
    }
    table.push_str("];\n");
    let table_file = out_dir.join("embedded_charts.rs");
    std::fs::write(&table_file, table)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", table_file.display()));
}
