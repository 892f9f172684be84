//! Writing output files safely: the one place tendril writes a file a user
//! named (`-o`, `--out-dir`, kubeconfigs, plan files, scratch files).
//!
//! [`write`] decides by what is at the path:
//! - `-` is standard output;
//! - a FIFO, a character or block device or a socket (`/dev/null`,
//!   `/dev/stdout`, a named pipe) is opened and written straight through,
//!   never replaced;
//! - a symbolic link is followed: its target is replaced atomically, in the
//!   target's own directory, and the link stays a link;
//! - anything else (a regular file, or nothing yet) is replaced atomically: a
//!   temporary file in the same directory, synced, then renamed into place
//!   (`tempfile`'s `persist`), so a reader never sees half a file.
//!
//! A file that can hold a secret ([`Mode::Secret`]) is created 0600; other
//! files 0644. [`private_dir`] creates scratch directories 0700.
//!
//! ```
//! use tendril::outfile::{write, Mode};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("report.json");
//! write(&path, b"{}", Mode::Secret).unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{}");
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Who may read a file tendril writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It can hold a secret (a report, credentials, a kubeconfig): 0600.
    Secret,
    /// It holds nothing secret (rendered manifests without passwords): 0644.
    Public,
}

impl Mode {
    #[cfg(unix)]
    fn bits(self) -> u32 {
        match self {
            Mode::Secret => 0o600,
            Mode::Public => 0o644,
        }
    }
}

/// What a path names, for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-`: standard output.
    Stdout,
    /// A FIFO, device or socket: written straight through.
    Stream(PathBuf),
    /// A regular file (or nothing yet), replaced atomically. For a symbolic
    /// link, the file it points at.
    File(PathBuf),
}

/// What can go wrong writing a file.
#[derive(Debug, thiserror::Error)]
pub enum OutfileError {
    /// The path is a directory.
    #[error("cannot write {path}: it is a directory; give a file name")]
    IsDirectory {
        /// The path.
        path: PathBuf,
    },
    /// An I/O step failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What tendril was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl OutfileError {
    /// The underlying I/O error, when there is one.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            OutfileError::Io { source, .. } => Some(source),
            OutfileError::IsDirectory { .. } => None,
        }
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutfileError {
    let path = path.to_path_buf();
    move |source| OutfileError::Io {
        action,
        path,
        source,
    }
}

/// Follows symbolic links from `path` to the path that would be written,
/// without requiring the final target to exist (a dangling link names the
/// file it will create).
fn follow_links(path: &Path) -> Result<PathBuf, OutfileError> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current).map_err(io("read link", &current))?;
                current = if link.is_absolute() {
                    link
                } else {
                    current
                        .parent()
                        .map(|p| p.join(&link))
                        .unwrap_or_else(|| link.clone())
                };
            }
            _ => return Ok(current),
        }
    }
    Err(OutfileError::Io {
        action: "follow the links of",
        path: path.to_path_buf(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

/// What `path` names for writing (see the module docs).
pub fn target(path: &Path) -> Result<Target, OutfileError> {
    if path.as_os_str() == "-" {
        return Ok(Target::Stdout);
    }
    let resolved = follow_links(path)?;
    match std::fs::metadata(&resolved) {
        Ok(meta) if meta.is_dir() => Err(OutfileError::IsDirectory { path: resolved }),
        Ok(meta) if !meta.is_file() => Ok(Target::Stream(resolved)),
        _ => Ok(Target::File(resolved)),
    }
}

/// Writes `bytes` to `path` safely (see the module docs). The parent
/// directory of a regular file must exist.
pub fn write(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), OutfileError> {
    match target(path)? {
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(io("write to", Path::new("standard output")))
        }
        Target::Stream(p) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(io("open", &p))?;
            f.write_all(bytes).map_err(io("write", &p))
        }
        Target::File(p) => replace_atomically(&p, bytes, mode),
    }
}

fn replace_atomically(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), OutfileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode.bits()));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", tmp.path()))?;
    tmp.as_file().sync_all().map_err(io("sync", tmp.path()))?;
    // permissions given at creation are filtered by the umask; set them exactly
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode.bits()))
            .map_err(io("set the permissions of", tmp.path()))?;
    }
    tmp.persist(path).map_err(|e| OutfileError::Io {
        action: "rename into place",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Creates `path` and its missing parents; `path` itself is created 0700
/// (it holds a plan or credentials). An existing directory is left as it is.
pub fn private_dir(path: &Path) -> Result<(), OutfileError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io("create directory", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_regular_file_is_replaced_with_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        std::fs::write(&p, b"old").unwrap();
        write(&p, b"new", Mode::Secret).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        #[cfg(unix)]
        assert_eq!(mode_of(&p), 0o600);
        write(&p, b"public", Mode::Public).unwrap();
        #[cfg(unix)]
        assert_eq!(mode_of(&p), 0o644);
        // no temporary file left behind
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_stays_a_link_and_its_target_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("out.yaml");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink("real/out.yaml", &link).unwrap();
        write(&link, b"new", Mode::Public).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // a dangling link creates its target
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("real/new.yaml", &dangling).unwrap();
        write(&dangling, b"created", Mode::Secret).unwrap();
        assert_eq!(
            std::fs::read(real_dir.join("new.yaml")).unwrap(),
            b"created"
        );
        assert_eq!(mode_of(&real_dir.join("new.yaml")), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        write(&fifo, b"through the pipe", Mode::Secret).unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(target(&fifo).unwrap(), Target::Stream(fifo.clone()));
        assert_eq!(target(Path::new("-")).unwrap(), Target::Stdout);
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), b"x", Mode::Public).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/scratch");
        private_dir(&p).unwrap();
        assert_eq!(mode_of(&p), 0o700);
        private_dir(&p).unwrap();
    }
}
