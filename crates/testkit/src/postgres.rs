//! Starts a throwaway PostgreSQL cluster on a free loopback port.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! cluster is created and started as the `postgres` user through
//! `runuser -u postgres --`, in a temporary directory that user owns.
//! `initdb` and `pg_ctl` are looked up on `PATH`, in `/usr/local/bin` and in
//! `/usr/lib/postgresql/*/bin`.
//!
//! A test binary should start one cluster ([`Postgres::shared`]) and give each
//! test its own database ([`Postgres::fresh_database`]): starting a cluster
//! takes a second or two, creating a database a few milliseconds. The shared
//! cluster lives in a `static`, which Rust never drops, so a small watchdog
//! process stops it and removes its directory once the test process is gone.
//! A cluster made with [`Postgres::start`] is stopped when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster. Superuser `postgres`, no password (trust auth).
pub struct Postgres {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The server options (`pg_ctl -o`), set once it has started.
    opts: OnceLock<String>,
}

static SHARED: OnceLock<Postgres> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Postgres {
    /// The cluster shared by all tests of this test binary, started on first use.
    pub fn shared() -> &'static Postgres {
        SHARED.get_or_init(|| {
            let pg = Postgres::start();
            pg.watch_parent();
            pg
        })
    }

    /// Creates and starts a new cluster; panics with the server log when it cannot.
    pub fn start() -> Postgres {
        Postgres::start_with_tls(None)
    }

    /// Creates and starts a new cluster that also accepts TLS (`ssl=on`) with
    /// this certificate and key (PEM files; copied into the cluster's
    /// directory). Plaintext connections stay allowed.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Postgres {
        Postgres::start_with_tls(Some((cert, key)))
    }

    fn start_with_tls(tls: Option<(&std::path::Path, &std::path::Path)>) -> Postgres {
        let bindir = find_bindir();
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "tendril-pg-{}-{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        if as_postgres {
            let st = Command::new("chown")
                .args(["postgres:postgres", &dir.to_string_lossy()])
                .status()
                .unwrap_or_else(|e| panic!("cannot run chown: {e}"));
            assert!(st.success(), "chown postgres {} failed", dir.display());
        }
        let port = free_port();
        let pg = Postgres {
            dir,
            bindir,
            port,
            as_postgres,
            opts: OnceLock::new(),
        };
        let data = pg.dir.join("data");
        let out = pg
            .command("initdb")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB",
            pg.dir.display()
        );
        if let Some((cert, key)) = tls {
            let (c, k) = (pg.dir.join("server.crt"), pg.dir.join("server.key"));
            std::fs::copy(cert, &c)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", cert.display()));
            std::fs::copy(key, &k).unwrap_or_else(|e| panic!("cannot copy {}: {e}", key.display()));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", k.display()));
            if as_postgres {
                let st = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&c)
                    .arg(&k)
                    .status()
                    .unwrap_or_else(|e| panic!("cannot run chown: {e}"));
                assert!(st.success(), "chown of the TLS files failed");
            }
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            ));
        }
        let _ = pg.opts.set(opts);
        pg.run_server();
        pg
    }

    /// Starts the server of the cluster's data directory and waits until it listens.
    fn run_server(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let opts = self.opts.get().cloned().unwrap_or_default();
        let out = self
            .command("pg_ctl")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "120",
                "start",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        if !out.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("pg_ctl start failed: {log}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen on port {} within 60 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are closed), as an
    /// outage would; [`Postgres::resume`] starts it again on the same port
    /// with the same data. Meant for a cluster of one's own
    /// ([`Postgres::start`]), not the shared one.
    pub fn pause(&self) {
        let data = self.dir.join("data");
        let st = self
            .command("pg_ctl")
            .args(["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(st.success(), "pg_ctl stop failed: {}", self.log());
    }

    /// Starts the server again after [`Postgres::pause`].
    pub fn resume(&self) {
        self.run_server();
    }

    fn command(&self, tool: &str) -> Command {
        let bin = self.bindir.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// Stops the cluster and removes its directory when this process exits.
    fn watch_parent(&self) {
        let data = self.dir.join("data");
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database with a unique name and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// The server log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data.to_string_lossy(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_bindir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/local/bin"));
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        versions.reverse();
        candidates.extend(versions);
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!("initdb and pg_ctl not found on PATH, in /usr/local/bin or /usr/lib/postgresql/*/bin; install PostgreSQL (apt-get install postgresql)")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// The directory holding `initdb` and `pg_ctl`.
pub fn bindir() -> PathBuf {
    find_bindir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_creates_databases_and_stops() {
        let pg = Postgres::start();
        let url = pg.fresh_database().await;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT current_database(), 1 + 1", &[])
            .await
            .unwrap();
        let n: i32 = row.get(1);
        assert_eq!(n, 2);
        let db: String = row.get(0);
        assert!(url.ends_with(&db));
        drop(client);
        let port = pg.port();
        drop(pg);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
