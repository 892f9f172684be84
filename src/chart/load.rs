//! Loading charts from directories and `.tgz` archives, entirely in memory.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Component, Path};

use super::{Chart, ChartError, ChartFile, ChartMetadata, render};

/// Size limits applied while unpacking an archive, so a hostile archive (a
/// gzip bomb, millions of entries) fails fast with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, in bytes (default 16 MiB).
    pub max_entry_bytes: u64,
    /// Largest total of all unpacked bytes, tar headers included (default 64 MiB).
    pub max_total_bytes: u64,
    /// Most entries (default 10 000).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_bytes: 16 << 20,
            max_total_bytes: 64 << 20,
            max_entries: 10_000,
        }
    }
}

/// Loads a directory or, for anything else, a `.tgz` file.
pub(crate) fn load_path(path: &Path, limits: &Limits) -> Result<Chart, ChartError> {
    let meta = std::fs::metadata(path).map_err(|source| ChartError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return load_dir(path);
    }
    let bytes = std::fs::read(path).map_err(|source| ChartError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    from_files(unpack_archive(&bytes, &origin, limits)?, &origin, None)
}

/// Loads a chart directory.
pub(crate) fn load_dir(dir: &Path) -> Result<Chart, ChartError> {
    let files = super::pack::collect_dir(dir).map_err(|source| ChartError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    from_files(files, &dir.display().to_string(), None)
}

/// Stops reading once more than `remaining` bytes came out of the decompressor.
struct Capped<R> {
    inner: R,
    remaining: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            // Anything more is over the limit; a clean end of stream reads 0.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(format!(
                    "it unpacks to more than {} bytes",
                    self.limit
                ))),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

enum Item {
    File(Vec<u8>),
    /// A link and its target, normalised relative to the archive root.
    Link(Vec<String>),
}

/// Normalises an entry path into components, refusing anything that could
/// leave the extraction root.
fn entry_components(path: &Path, archive: &str) -> Result<Vec<String>, ChartError> {
    let mut parts = Vec::new();
    for comp in path.components() {
        match comp {
            Component::Normal(p) => match p.to_str() {
                Some(s) => parts.push(s.to_string()),
                None => {
                    return Err(archive_err(
                        archive,
                        format!("entry {path:?} has a name that is not UTF-8"),
                    ));
                }
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(archive_err(
                    archive,
                    format!(
                        "entry {path:?} contains `..`; refusing an archive that reaches outside the chart"
                    ),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(archive_err(
                    archive,
                    format!(
                        "entry {path:?} is an absolute path; chart archives hold relative paths only"
                    ),
                ));
            }
        }
    }
    Ok(parts)
}

fn archive_err(archive: &str, reason: String) -> ChartError {
    ChartError::Archive {
        archive: archive.to_string(),
        reason,
    }
}

/// Unpacks a `.tgz` in memory within `limits`: the chart's files, paths
/// relative to the chart root.
pub(crate) fn unpack_archive(
    bytes: &[u8],
    origin: &str,
    limits: &Limits,
) -> Result<Vec<(String, Vec<u8>)>, ChartError> {
    let capped = Capped {
        inner: flate2::read::GzDecoder::new(bytes),
        remaining: limits.max_total_bytes,
        limit: limits.max_total_bytes,
    };
    let mut archive = tar::Archive::new(capped);
    let entries = archive
        .entries()
        .map_err(|e| archive_err(origin, format!("not a readable tar.gz: {e}")))?;
    let mut items: Vec<(Vec<String>, Item)> = Vec::new();
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    let mut total: u64 = 0;
    for (index, entry) in entries.enumerate() {
        if index >= limits.max_entries {
            return Err(archive_err(
                origin,
                format!(
                    "more than {} entries; a chart this large is refused",
                    limits.max_entries
                ),
            ));
        }
        let mut entry =
            entry.map_err(|e| archive_err(origin, format!("cannot read entry #{index}: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| archive_err(origin, format!("entry #{index} has an invalid path: {e}")))?
            .into_owned();
        let parts = entry_components(&raw_path, origin)?;
        let kind = entry.header().entry_type();
        let item = match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| {
                    archive_err(
                        origin,
                        format!("entry {raw_path:?} has an invalid size: {e}"),
                    )
                })?;
                if size > limits.max_entry_bytes {
                    return Err(archive_err(
                        origin,
                        format!(
                            "entry {raw_path:?} is {size} bytes, over the limit of {} bytes per file",
                            limits.max_entry_bytes
                        ),
                    ));
                }
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(archive_err(
                        origin,
                        format!(
                            "the files unpack to more than {} bytes in all",
                            limits.max_total_bytes
                        ),
                    ));
                }
                let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                (&mut entry)
                    .take(limits.max_entry_bytes + 1)
                    .read_to_end(&mut data)
                    .map_err(|e| archive_err(origin, format!("cannot unpack {raw_path:?}: {e}")))?;
                Item::File(data)
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| {
                        archive_err(
                            origin,
                            format!("link {raw_path:?} has an invalid target: {e}"),
                        )
                    })?
                    .ok_or_else(|| archive_err(origin, format!("link {raw_path:?} has no target")))?
                    .into_owned();
                let base: Vec<String> = if kind == tar::EntryType::Symlink {
                    parts[..parts.len().saturating_sub(1)].to_vec()
                } else {
                    Vec::new()
                };
                Item::Link(resolve_link(&base, &target, &raw_path, origin)?)
            }
            other => {
                return Err(archive_err(
                    origin,
                    format!(
                        "entry {raw_path:?} is a {} entry (device, FIFO or other special file); \
                         charts hold regular files only",
                        entry_kind_name(other)
                    ),
                ));
            }
        };
        if parts.is_empty() {
            continue;
        }
        if !seen.insert(parts.clone()) {
            return Err(archive_err(
                origin,
                format!("entry {raw_path:?} appears twice; repack the chart"),
            ));
        }
        items.push((parts, item));
    }

    // Helm archives hold one top directory (the chart's name): strip it.
    let top: Option<String> = {
        let first = items.first().map(|(p, _)| p[0].clone());
        match first {
            Some(f) if items.iter().all(|(p, _)| p.len() >= 2 && p[0] == f) => Some(f),
            _ => None,
        }
    };
    let strip = usize::from(top.is_some());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: Vec<(String, Vec<String>, String)> = Vec::new();
    for (parts, item) in items {
        let rel = parts[strip..].join("/");
        match item {
            Item::File(data) => {
                files.insert(rel, data);
            }
            Item::Link(target) => {
                if let Some(t) = &top
                    && target.first() != Some(t)
                {
                    return Err(archive_err(
                        origin,
                        format!("link {rel:?} points outside the chart directory {t:?}"),
                    ));
                }
                let target_rel = target[strip.min(target.len())..].join("/");
                links.push((rel, target, target_rel));
            }
        }
    }
    for (rel, _, target_rel) in links {
        let data = files.get(&target_rel).cloned().ok_or_else(|| {
            archive_err(
                origin,
                format!("link {rel:?} points to {target_rel:?}, which is not a file of the chart"),
            )
        })?;
        files.insert(rel, data);
    }
    Ok(files.into_iter().collect())
}

fn entry_kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special",
    }
}

/// Resolves a link target against the link's directory (`base`, relative to
/// the archive root); refuses absolute targets and targets above the root.
fn resolve_link(
    base: &[String],
    target: &Path,
    link: &Path,
    origin: &str,
) -> Result<Vec<String>, ChartError> {
    let mut out: Vec<String> = base.to_vec();
    for comp in target.components() {
        match comp {
            Component::Normal(p) => out.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(archive_err(
                        origin,
                        format!("link {link:?} -> {target:?} points outside the chart"),
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(archive_err(
                    origin,
                    format!("link {link:?} -> {target:?} is absolute and points outside the chart"),
                ));
            }
        }
    }
    Ok(out)
}

fn invalid(origin: &str, reason: String) -> ChartError {
    ChartError::Invalid {
        chart: origin.to_string(),
        reason,
    }
}

fn utf8(origin: &str, path: &str, data: Vec<u8>) -> Result<String, ChartError> {
    String::from_utf8(data).map_err(|_| invalid(origin, format!("{path} is not UTF-8 text")))
}

/// `values.yaml` and the `crds/` files of a chart, parsed ahead of time (for
/// the embedded charts, by build.rs): loading takes them instead of parsing
/// the YAML again.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Preparsed {
    values: serde_json::Value,
    crds: Vec<PreparsedFile>,
}

/// One parsed `crds/` file.
#[derive(Debug, serde::Deserialize)]
struct PreparsedFile {
    path: String,
    docs: Vec<serde_json::Value>,
}

impl Preparsed {
    /// Reads the JSON that build.rs wrote.
    pub(crate) fn from_json(text: &str, origin: &str) -> Result<Preparsed, ChartError> {
        serde_json::from_str(text).map_err(|e| {
            invalid(
                origin,
                format!("the chart's precomputed YAML is unreadable ({e}); rebuild tendril"),
            )
        })
    }
}

/// Builds a chart from its files (paths relative to the chart root). With
/// `preparsed`, `values.yaml` and `crds/` are taken from it, not parsed.
pub(crate) fn from_files(
    files: Vec<(String, Vec<u8>)>,
    origin: &str,
    preparsed: Option<Preparsed>,
) -> Result<Chart, ChartError> {
    let mut metadata: Option<ChartMetadata> = None;
    let mut default_values = serde_json::Value::Object(serde_json::Map::new());
    let mut templates = Vec::new();
    let mut crds = Vec::new();
    let mut surface = None;
    for (path, data) in files {
        if path == "Chart.yaml" {
            let text = utf8(origin, &path, data)?;
            let meta: ChartMetadata =
                serde_saphyr::from_str(&text).map_err(|e| ChartError::Yaml {
                    file: format!("{origin}/Chart.yaml"),
                    message: e.to_string(),
                })?;
            metadata = Some(meta);
        } else if path == "values.yaml" {
            let text = utf8(origin, &path, data)?;
            if preparsed.is_none() {
                default_values =
                    super::values::parse_values(&text, &format!("{origin}/values.yaml"))?;
            }
        } else if path == "surface.yaml" {
            let text = utf8(origin, &path, data)?;
            surface = Some(super::surface::Surface::parse(
                &text,
                &format!("{origin}/surface.yaml"),
            )?);
        } else if path.starts_with("templates/") {
            let text = utf8(origin, &path, data)?;
            templates.push(ChartFile { path, text });
        } else if path.starts_with("crds/")
            && (path.ends_with(".yaml") || path.ends_with(".yml") || path.ends_with(".json"))
        {
            let text = utf8(origin, &path, data)?;
            crds.push(ChartFile { path, text });
        }
    }
    let metadata = metadata.ok_or_else(|| {
        invalid(
            origin,
            "no Chart.yaml at the chart root; a chart directory (or the one top directory of \
             the archive) must hold Chart.yaml"
                .to_string(),
        )
    })?;
    if metadata.name.trim().is_empty() {
        return Err(invalid(origin, "Chart.yaml: `name` is empty".to_string()));
    }
    if metadata.version.trim().is_empty() {
        return Err(invalid(
            origin,
            "Chart.yaml: `version` is empty".to_string(),
        ));
    }
    templates.sort_by(|a, b| a.path.cmp(&b.path));
    crds.sort_by(|a, b| a.path.cmp(&b.path));
    let mut crd_documents = std::sync::OnceLock::new();
    if let Some(pre) = preparsed {
        default_values = pre.values;
        let parsed: render::CrdDocuments = pre
            .crds
            .into_iter()
            .map(|f| {
                (
                    f.path,
                    f.docs.into_iter().map(std::sync::Arc::new).collect(),
                )
            })
            .collect();
        if parsed
            .iter()
            .map(|(p, _)| p)
            .ne(crds.iter().map(|c| &c.path))
        {
            return Err(invalid(
                origin,
                "the chart's precomputed CRDs do not match its crds/ files; rebuild tendril"
                    .to_string(),
            ));
        }
        crd_documents = std::sync::OnceLock::from(parsed);
    }
    Ok(Chart {
        origin: origin.to_string(),
        metadata,
        default_values,
        templates,
        crds,
        surface,
        crd_documents,
        compiled: std::sync::OnceLock::new(),
        parsed: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(len: usize, limit: u64) -> std::io::Result<usize> {
        let data = vec![7u8; len];
        let mut r = Capped {
            inner: data.as_slice(),
            remaining: limit,
            limit,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out)
    }

    #[test]
    fn embedded_charts_take_their_yaml_precomputed_and_it_matches_the_archive() {
        use crate::Secret;
        use crate::chart::{Chart, RenderOptions, manifests_to_yaml};
        for name in Chart::embedded_names() {
            let fast = Chart::embedded(name).unwrap();
            assert!(
                fast.crd_documents.get().is_some(),
                "{name}: build.rs precomputed nothing"
            );
            let archive = Chart::embedded_archive(name).unwrap();
            let parsed = Chart::from_archive(archive, name, &Limits::default()).unwrap();
            assert!(parsed.crd_documents.get().is_none());
            assert_eq!(fast.default_values, parsed.default_values, "{name}");
            assert_eq!(fast.crds, parsed.crds, "{name}");
        }
        // Rendering from the precomputed YAML and from the archive's text
        // gives the same output, and the CRDs parsed on the way are the same.
        let fast = Chart::embedded("argocd").unwrap();
        let parsed = Chart::from_archive(
            Chart::embedded_archive("argocd").unwrap(),
            "argocd",
            &Limits::default(),
        )
        .unwrap();
        let opts = RenderOptions::new("r", "ns")
            .with_input("redis_password", Secret::new("pw".to_string()));
        let a = manifests_to_yaml(&fast.render(&opts).unwrap());
        let b = manifests_to_yaml(&parsed.render(&opts).unwrap());
        assert_eq!(a, b);
        assert_eq!(fast.crd_documents.get().map(Vec::len), Some(3));
        assert_eq!(fast.crd_documents.get(), parsed.crd_documents.get());
    }

    #[test]
    fn the_stream_cap_stops_a_decompressed_stream_over_the_limit() {
        assert_eq!(read_all(1000, 1000).unwrap(), 1000);
        assert_eq!(read_all(999, 1000).unwrap(), 999);
        let err = read_all(3000, 1000).unwrap_err();
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
    }
}
