//! A Kubernetes API server for tests, speaking real HTTPS on loopback.
//!
//! It keeps everything in memory and implements what tendril's tests need
//! from the real server, with the real wire shapes, so kube-rs `Client`,
//! `Discovery` and `watcher` run unchanged against it:
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}` (legacy documents, and aggregated discovery
//!   `apidiscovery.k8s.io/v2` when the `Accept` header asks for it);
//! - get, list (label/field selectors, `limit`/`continue`), create, update,
//!   delete, deletecollection; merge, strategic-merge and JSON patches;
//! - server-side apply with per-manager field ownership (`managedFields`,
//!   `FieldsV1`), conflicts (`409`) unless `force=true`, removal of fields a
//!   manager stops applying, and `422` without `fieldManager`;
//! - the `status` subresource (main-resource writes ignore status for kinds
//!   that have one), `dryRun=All`, `metadata.generation`, `uid`,
//!   `resourceVersion`, `creationTimestamp`;
//! - watches with resourceVersions, `BOOKMARK` events, `sendInitialEvents`
//!   history from the server's start (a watch from resourceVersion 1
//!   replays it) and `410 Gone` (as an `ERROR` event) once compacted;
//! - CustomResourceDefinitions: an applied CRD is marked `NamesAccepted` and
//!   `Established`, and its custom resources are served;
//! - deleting a Namespace deletes its contents; immutable fields (a Service's
//!   `spec.clusterIP`, a Deployment's `spec.selector`, a Job's
//!   `spec.template`) are rejected with `422 Invalid` like the real server.
//!
//! It answers as the recorded real server of `../shared/k8s-contract/` does
//! (replayed by `tests/k8s_contract.rs`): text 404s for unknown groups, the
//! real managedFields bookkeeping, a `kube-root-ca.crt` in every new
//! namespace, asynchronous namespace deletion, CRDs that establish in stages.
//! Beyond those simulated controllers nothing becomes ready by itself: tests
//! set status through the status subresource, exactly as they would on a
//! real cluster. See `docs/test-apiserver.md`.

mod fields;
mod http;
mod registry;
mod schema;
mod store;
mod typed;
mod util;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};

use self::http::Shared;
use self::store::State;
use crate::tokens::TestCa;

/// Options for [`ApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a watch that sets `allowWatchBookmarks` receives a
    /// `BOOKMARK` event (the real server sends them about once a minute;
    /// the default here is one second so tests see them quickly).
    pub bookmark_interval: Duration,
    /// How long after a CustomResourceDefinition is written it becomes
    /// served and `Established` (zero, the default: at once, within the
    /// same request). A real server takes a moment; a delay lets tests
    /// check that a client waits for `Established` instead of racing.
    pub crd_establish_delay: Duration,
    /// How long a deleted Namespace stays `Terminating` before its contents
    /// and then the namespace itself are removed, as the namespace
    /// controller does (a real cluster takes seconds). Default 300 ms.
    pub namespace_deletion_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Duration::from_secs(1),
            crd_establish_delay: Duration::ZERO,
            namespace_deletion_delay: Duration::from_millis(300),
        }
    }
}

/// A running test API server. It stops when dropped.
///
/// It serves HTTPS only, with a certificate for `127.0.0.1` signed by a CA
/// made for this server, and answers `401 Unauthorized` to a request without
/// its bearer token, as a real API server does. [`kubeconfig_yaml`](Self::kubeconfig_yaml)
/// and [`client`](Self::client) carry both.
pub struct ApiServer {
    addr: SocketAddr,
    ca_pem: String,
    token: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ApiServer {
    /// Starts a server on `127.0.0.1:0` with default [`Options`].
    ///
    /// Panics when no loopback port can be bound (tests cannot run then).
    pub fn start() -> ApiServer {
        ApiServer::try_start(Options::default())
            .unwrap_or_else(|e| panic!("cannot start the test API server on 127.0.0.1: {e}"))
    }

    /// Starts a server with the given options.
    pub fn start_with(options: Options) -> ApiServer {
        ApiServer::try_start(options)
            .unwrap_or_else(|e| panic!("cannot start the test API server on 127.0.0.1: {e}"))
    }

    /// Starts a server, returning the error when the port or the runtime
    /// cannot be set up. The server runs on its own thread, so it does not
    /// need (and does not block) the caller's runtime.
    pub fn try_start(options: Options) -> io::Result<ApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(addr.port()).rotate_left(40);
        let ca = TestCa::new();
        let token = format!("tendril-test-{seed:016x}");
        let mut state = State::new(seed);
        state.crd_delay = !options.crd_establish_delay.is_zero();
        state.root_ca_pem = ca.ca_pem.clone();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            state.publish_root_ca(ns);
        }
        state.pending_root_ca.clear();
        let (rv_tx, _) = watch::channel(state.rv);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            rv_tx,
            bookmark_interval: options.bookmark_interval,
            crd_delay: options.crd_establish_delay,
            token: token.clone(),
            namespace_delay: options.namespace_deletion_delay,
            requests: Default::default(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config.clone());
        let served = shared.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("test-apiserver-{}", addr.port()))
            .enable_all()
            .build()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("test-apiserver-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(serve(listener, acceptor, shared, stop_rx));
                runtime.shutdown_background();
            })?;
        Ok(ApiServer {
            addr,
            ca_pem: ca.ca_pem,
            token,
            stop: Some(stop_tx),
            thread: Some(thread),
            shared: served,
        })
    }

    /// The server URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM certificate of the CA that signed the server's certificate
    /// (what a kubeconfig's `certificate-authority-data` carries, decoded).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// How many requests the server has received so far, from every client
    /// (to count what a client sends, e.g. in a benchmark).
    pub fn requests_received(&self) -> u64 {
        self.shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig (YAML) whose current context points at this server,
    /// with its CA (`certificate-authority-data`) and bearer token.
    pub fn kubeconfig_yaml(&self) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: tendril-test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: tendril-test\n  user:\n    token: {}\n\
             contexts:\n- name: tendril-test\n  context:\n    cluster: tendril-test\n    user: tendril-test\n    namespace: default\n\
             current-context: tendril-test\npreferences: {{}}\n",
            self.url(),
            self.token
        )
    }

    /// Writes [`kubeconfig_yaml`](Self::kubeconfig_yaml) to `path`
    /// (through a temporary file renamed into place).
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, self.kubeconfig_yaml())?;
        std::fs::rename(&tmp, path)
    }

    /// The kube-rs configuration for this server: its URL, CA and token.
    pub fn config(&self) -> kube::Config {
        let uri = self
            .url()
            .parse::<::http::Uri>()
            .unwrap_or_else(|e| panic!("test API server URL {} is not a URI: {e}", self.url()));
        let mut config = kube::Config::new(uri);
        config.root_cert = Some(vec![ca_der(&self.ca_pem)]);
        config.auth_info.token = Some(self.token.clone().into());
        config
    }

    /// A kube-rs client for this server. Must be called inside a tokio
    /// runtime (kube's client spawns its buffer task there).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config())
            .unwrap_or_else(|e| panic!("cannot build a kube client for {}: {e}", self.url()))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The DER bytes of the first certificate in `pem`.
fn ca_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_else(|e| panic!("the test CA PEM is not base64: {e}"))
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = service_fn(move |req| http::handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        }
    }
}
