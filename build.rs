//! Packs every chart under `templates/` (a directory holding a `Chart.yaml`)
//! into a reproducible `.tgz` in `OUT_DIR`, and writes the table
//! `embedded_charts.rs` that `src/chart/embedded.rs` includes. The packing code
//! is the library's own `src/chart/pack.rs`, so `tendril chart package` on the
//! same directory gives the same bytes.

#[allow(dead_code)]
#[path = "src/chart/pack.rs"]
mod pack;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
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
         pub static CHARTS: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &charts {
        let bytes = pack::pack_dir(path)
            .unwrap_or_else(|e| panic!("cannot pack the chart {}: {e}", path.display()));
        let file = out_dir.join(format!("{name}.tgz"));
        std::fs::write(&file, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        let _ = writeln!(
            table,
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.tgz\"))),"
        );
    }
    table.push_str("];\n");
    let table_file = out_dir.join("embedded_charts.rs");
    std::fs::write(&table_file, table)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", table_file.display()));
}
