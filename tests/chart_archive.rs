//! Chart archives: loading, safety against hostile archives (crafted here,
//! byte by byte where the `tar` crate would refuse to write them), and
//! reproducible packaging.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;
use tendril::chart::{Chart, ChartError, Limits, RenderOptions, manifests_to_yaml, pack};

const CHART_YAML: &[u8] = b"apiVersion: v2\nname: demo\nversion: 0.1.0\n";
const CM: &[u8] = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/charts")
        .join(name)
}

/// One raw tar entry: the path is written into the header bytes as given.
struct Raw<'a> {
    path: &'a str,
    kind: tar::EntryType,
    link: Option<&'a str>,
    data: &'a [u8],
    /// Size to claim in the header (defaults to data.len()).
    claim: Option<u64>,
}

impl<'a> Raw<'a> {
    fn file(path: &'a str, data: &'a [u8]) -> Self {
        Raw {
            path,
            kind: tar::EntryType::Regular,
            link: None,
            data,
            claim: None,
        }
    }
    fn link(path: &'a str, kind: tar::EntryType, target: &'a str) -> Self {
        Raw {
            path,
            kind,
            link: Some(target),
            data: b"",
            claim: None,
        }
    }
    fn special(path: &'a str, kind: tar::EntryType) -> Self {
        Raw {
            path,
            kind,
            link: None,
            data: b"",
            claim: None,
        }
    }
}

fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name = [0; 100];
            gnu.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            if let Some(l) = e.link {
                gnu.linkname = [0; 100];
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(e.kind);
        h.set_size(e.claim.unwrap_or(e.data.len() as u64));
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn load(entries: &[Raw<'_>]) -> Result<Chart, ChartError> {
    Chart::from_archive(&gzip(&raw_tar(entries)), "test.tgz", &Limits::default())
}

fn archive_error(entries: &[Raw<'_>]) -> String {
    match load(entries) {
        Err(e @ ChartError::Archive { .. }) => e.to_string(),
        Err(other) => panic!("expected an archive error, got {other}"),
        Ok(_) => panic!("a hostile archive was accepted"),
    }
}

fn base<'a>() -> Vec<Raw<'a>> {
    vec![
        Raw::file("demo/Chart.yaml", CHART_YAML),
        Raw::file("demo/templates/cm.yaml", CM),
    ]
}

#[test]
fn a_well_formed_archive_loads_with_its_top_directory_stripped() {
    let chart = load(&base()).unwrap();
    assert_eq!(chart.metadata.name, "demo");
    assert_eq!(chart.templates.len(), 1);
    assert_eq!(chart.templates[0].path, "templates/cm.yaml");
    let m = chart.render(&RenderOptions::new("r", "ns")).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].namespace.as_deref(), Some("ns"));
}

#[test]
fn an_archive_without_a_top_directory_loads_too() {
    let chart = load(&[
        Raw::file("Chart.yaml", CHART_YAML),
        Raw::file("templates/cm.yaml", CM),
    ])
    .unwrap();
    assert_eq!(chart.templates[0].path, "templates/cm.yaml");
}

#[test]
fn parent_directory_entries_are_refused() {
    let mut e = base();
    e.push(Raw::file("demo/../evil.yaml", CM));
    let msg = archive_error(&e);
    assert!(msg.contains("..") && msg.contains("evil.yaml"), "{msg}");
}

#[test]
fn absolute_entries_are_refused() {
    let mut e = base();
    e.push(Raw::file("/etc/evil.yaml", CM));
    let msg = archive_error(&e);
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn symlinks_leaving_the_chart_are_refused() {
    for target in [
        "../../../etc/passwd",
        "../../other/Chart.yaml",
        "/etc/passwd",
    ] {
        let mut e = base();
        e.push(Raw::link(
            "demo/templates/link.yaml",
            tar::EntryType::Symlink,
            target,
        ));
        let msg = archive_error(&e);
        assert!(msg.contains("outside"), "{target}: {msg}");
    }
}

#[test]
fn hard_links_leaving_the_chart_are_refused() {
    // Hard-link targets are relative to the archive root: `other/` is beside
    // the chart's top directory `demo/`, so outside the chart.
    let mut e = base();
    e.push(Raw::link(
        "demo/templates/link.yaml",
        tar::EntryType::Link,
        "other/secret.yaml",
    ));
    let msg = archive_error(&e);
    assert!(msg.contains("outside"), "{msg}");
    let mut e = base();
    e.push(Raw::link(
        "demo/templates/link.yaml",
        tar::EntryType::Link,
        "../x",
    ));
    let msg = archive_error(&e);
    assert!(msg.contains("outside"), "{msg}");
}

#[test]
fn links_inside_the_chart_resolve_to_their_target() {
    let mut e = base();
    e.push(Raw::link(
        "demo/templates/again.yaml",
        tar::EntryType::Symlink,
        "cm.yaml",
    ));
    e.push(Raw::link(
        "demo/templates/hard.yaml",
        tar::EntryType::Link,
        "demo/templates/cm.yaml",
    ));
    let chart = load(&e).unwrap();
    let paths: Vec<&str> = chart.templates.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "templates/again.yaml",
            "templates/cm.yaml",
            "templates/hard.yaml"
        ]
    );
    assert!(chart.templates.iter().all(|t| t.text.as_bytes() == CM));
}

#[test]
fn a_link_to_a_missing_file_is_refused() {
    let mut e = base();
    e.push(Raw::link(
        "demo/templates/l.yaml",
        tar::EntryType::Symlink,
        "nope.yaml",
    ));
    let msg = archive_error(&e);
    assert!(msg.contains("not a file of the chart"), "{msg}");
}

#[test]
fn device_files_and_fifos_are_refused() {
    for (kind, word) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let mut e = base();
        e.push(Raw::special("demo/templates/dev", kind));
        let msg = archive_error(&e);
        assert!(msg.contains(word), "{msg}");
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let mut e = base();
    e.push(Raw::file("demo/templates/cm.yaml", CM));
    let msg = archive_error(&e);
    assert!(msg.contains("twice"), "{msg}");
}

#[test]
fn a_gzip_bomb_entry_is_refused_by_its_declared_size() {
    // 20 MiB of zeros compress to about 20 KiB; the per-file cap is 16 MiB.
    let zeros = vec![0u8; 20 << 20];
    let mut e = base();
    e.push(Raw::file("demo/templates/bomb.yaml", &zeros));
    let tgz = gzip(&raw_tar(&e));
    assert!(
        tgz.len() < 1 << 20,
        "the bomb should be small: {}",
        tgz.len()
    );
    let err = Chart::from_archive(&tgz, "bomb.tgz", &Limits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bomb.yaml") && msg.contains("over the limit"),
        "{msg}"
    );
}

#[test]
fn the_total_unpacked_size_is_capped() {
    let mib = vec![b'a'; 1 << 20];
    let mut e = base();
    for name in ["demo/a", "demo/b", "demo/c"] {
        e.push(Raw::file(name, &mib));
    }
    let limits = Limits {
        max_entry_bytes: 2 << 20,
        max_total_bytes: 2 << 20,
        max_entries: 100,
    };
    let err = Chart::from_archive(&gzip(&raw_tar(&e)), "big.tgz", &limits).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("more than 2097152 bytes"), "{msg}");
}

#[test]
fn garbage_after_the_entries_is_an_archive_error() {
    // Bytes that are not a tar header where the next header should be.
    let junk = vec![b'x'; 64 << 10];
    let mut tar = raw_tar(&base());
    tar.truncate(tar.len() - 1024); // drop the end-of-archive blocks
    tar.extend_from_slice(&junk);
    let err = Chart::from_archive(&gzip(&tar), "junk.tgz", &Limits::default()).unwrap_err();
    assert!(matches!(err, ChartError::Archive { .. }), "{err}");
    assert!(err.to_string().contains("junk.tgz"), "{err}");
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..20).map(|i| format!("demo/f{i}")).collect();
    let mut e = base();
    for n in &names {
        e.push(Raw::file(n, b"x"));
    }
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let err = Chart::from_archive(&gzip(&raw_tar(&e)), "many.tgz", &limits).unwrap_err();
    assert!(err.to_string().contains("more than 10 entries"), "{err}");
}

#[test]
fn not_a_gzip_file_is_a_clear_error() {
    let err = Chart::from_archive(b"plain text", "x.tgz", &Limits::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("x.tgz"), "{msg}");
}

#[test]
fn an_archive_without_chart_yaml_is_refused() {
    let err = load(&[Raw::file("demo/templates/cm.yaml", CM)]).unwrap_err();
    assert!(matches!(err, ChartError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("Chart.yaml"), "{err}");
}

// ---- packaging ----

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

#[test]
fn packaging_is_reproducible_regardless_of_mtime_and_mode() {
    let src = fixture("basic");
    let first = pack::pack_dir(&src).unwrap();
    let second = pack::pack_dir(&src).unwrap();
    assert_eq!(sha(&first), sha(&second));

    // A copy with other timestamps, permissions and a hidden file gives the same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("basic");
    copy_dir(&src, &copy);
    std::fs::write(copy.join(".helmignore"), "ignored\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        copy.join("values.yaml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(copy.join("Chart.yaml"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .unwrap();
    let third = pack::pack_dir(&copy).unwrap();
    assert_eq!(sha(&first), sha(&third));

    // Changing a byte changes the archive.
    std::fs::write(copy.join("values.yaml"), "replicas: 2\n").unwrap();
    assert_ne!(sha(&first), sha(&pack::pack_dir(&copy).unwrap()));
}

#[test]
fn packed_entries_are_sorted_with_fixed_metadata() {
    let bytes = pack::pack_dir(&fixture("basic")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut paths = Vec::new();
    for entry in ar.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        paths.push(entry.path().unwrap().to_string_lossy().into_owned());
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert!(paths.iter().all(|p| p.starts_with("basic/")), "{paths:?}");
    assert!(paths.contains(&"basic/Chart.yaml".to_string()));
}

#[test]
fn a_packaged_chart_renders_like_its_directory() {
    let dir = Chart::load(fixture("basic")).unwrap();
    let bytes = pack::pack_dir(&fixture("basic")).unwrap();
    let tgz = Chart::from_archive(&bytes, "basic.tgz", &Limits::default()).unwrap();
    let opts = RenderOptions::new("rel", "ns");
    assert_eq!(
        manifests_to_yaml(&dir.render(&opts).unwrap()),
        manifests_to_yaml(&tgz.render(&opts).unwrap())
    );
}

#[test]
fn chart_package_command_writes_the_same_bytes_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.tgz");
    let b = tmp.path().join("b.tgz");
    for out in [&a, &b] {
        let status = Command::new(env!("CARGO_BIN_EXE_tendril"))
            .args(["chart", "package"])
            .arg(fixture("basic"))
            .arg("--output-file")
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(sha(&a), sha(&b));
    assert_eq!(a, pack::pack_dir(&fixture("basic")).unwrap());
}

#[test]
fn chart_package_refuses_a_broken_chart_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/x.yaml"), "a: 1\n").unwrap();
    let out = tmp.path().join("out.tgz");
    let output = Command::new(env!("CARGO_BIN_EXE_tendril"))
        .args(["chart", "package"])
        .arg(&dir)
        .arg("--output-file")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Chart.yaml"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn the_embedded_charts_are_packed_by_the_same_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    for name in Chart::embedded_names() {
        let embedded = Chart::embedded_archive(name).unwrap();
        let packed = pack::pack_dir(&root.join(name)).unwrap();
        assert_eq!(sha(embedded), sha(&packed), "embedded chart {name}");
        Chart::embedded(name).unwrap();
    }
    let err = Chart::embedded("no-such-chart").unwrap_err();
    assert!(matches!(err, ChartError::NoEmbedded { .. }), "{err}");
}
