//! Reproducible chart archives.
//!
//! This file is shared, unchanged, by the library (`chart::pack`) and by
//! `build.rs` (through `#[path]`), so the archive embedded in the binary and
//! the one `tendril chart package` writes are made by the same code. It may
//! therefore only use `std`, `tar` and `flate2`.
//!
//! An archive is a gzip-compressed tar whose entries are the chart's regular
//! files under one top directory (the chart directory's name), sorted by path
//! (byte order), each with mode 0644, uid/gid 0, empty owner names and mtime 0.
//! The gzip header carries no name and mtime 0. Directory entries are not
//! written. Hidden files and directories (names starting with `.`) are
//! skipped, and symbolic links are refused, so the archive depends only on the
//! content and relative paths of the chart's files.

use std::io::{self, Write};
use std::path::Path;

/// The fixed modification time of every archive entry (the Unix epoch).
pub const FIXED_MTIME: u64 = 0;
/// The fixed permission bits of every archive entry.
pub const FIXED_MODE: u32 = 0o644;

/// Reads every regular file under `dir` (recursively), returning paths
/// relative to `dir` with `/` separators, sorted by path.
///
/// Names starting with `.` (files and directories) are skipped. A symbolic
/// link is an error: an archive must not depend on what a link points to.
pub fn collect_dir(dir: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(files)
}

fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read directory {}: {e}", dir.display()),
        )
    })?;
    for entry in read {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: file name is not UTF-8; rename it",
                    entry.path().display()
                ),
            ));
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: symbolic links are not allowed in a chart; replace it with the file",
                    entry.path().display()
                ),
            ));
        } else if kind.is_dir() {
            walk(&entry.path(), &rel, files)?;
        } else if kind.is_file() {
            let data = std::fs::read(entry.path()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", entry.path().display()),
                )
            })?;
            files.push((rel, data));
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: only regular files and directories are allowed in a chart",
                    entry.path().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Packs `files` (relative paths with `/` separators) under the top directory
/// `top` into a reproducible `.tgz`: same files, same bytes.
pub fn pack_files(top: &str, files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    let mut builder = tar::Builder::new(gz);
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, data) in sorted {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(FIXED_MODE);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(FIXED_MTIME);
        header.set_username("")?;
        header.set_groupname("")?;
        let full = format!("{top}/{path}");
        builder.append_data(&mut header, &full, data.as_slice())?;
    }
    let gz = builder.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(out)
}

/// Packs the chart directory `dir` into a reproducible `.tgz`, with the
/// directory's own name as the archive's top directory.
pub fn pack_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let top = dir
        .canonicalize()?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: cannot tell the chart directory's name", dir.display()),
            )
        })?;
    let files = collect_dir(dir)?;
    pack_files(&top, &files)
}
