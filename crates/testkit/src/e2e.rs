//! Picks the cluster a Kubernetes test runs against.
//!
//! When `TENDRIL_E2E_KUBECONFIG` names a kubeconfig file, tests run against
//! that cluster (its current context); otherwise each call to [`cluster`]
//! starts a fresh in-repo [`ApiServer`]. Tests create their objects in a
//! [`TestNamespace`] with a unique name, so they can run in parallel and on
//! a shared real cluster.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::apiserver::{ApiServer, Options};

/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "TENDRIL_E2E_KUBECONFIG";

/// A cluster for one test: a kube client and the kubeconfig file it came from.
pub struct TestCluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    /// The in-repo server, when no real cluster is configured (kept alive here).
    server: Option<ApiServer>,
    /// A kubeconfig file this value wrote and removes on drop.
    owned_file: Option<PathBuf>,
}

impl TestCluster {
    /// The client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig file for this cluster (for CLI tests: `--kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client that sends each request once: kube-rs' default client
    /// retries `429`/`503`/`504` answers, which hides them from a test that
    /// checks them.
    pub async fn client_without_retries(&self) -> kube::Client {
        let path = &self.kubeconfig;
        let kc = Kubeconfig::read_from(path)
            .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: unusable: {e}", path.display()));
        config.default_retry = false;
        kube::Client::try_from(config)
            .unwrap_or_else(|e| panic!("{}: no client: {e}", path.display()))
    }

    /// Whether the tests run against a real cluster (`TENDRIL_E2E_KUBECONFIG`).
    pub fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// The in-repo server, when that is what runs.
    pub fn server(&self) -> Option<&ApiServer> {
        self.server.as_ref()
    }

    /// Creates a namespace named `{prefix}-{unique suffix}` and waits until it
    /// exists. Delete it with [`TestNamespace::delete`] at the end of the test.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("tendril.dev/test".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create test namespace {name}: {e}"));
        TestNamespace {
            name,
            client: self.client.clone(),
            deleted: false,
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(f) = self.owned_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A namespace created for one test.
pub struct TestNamespace {
    name: String,
    client: kube::Client,
    deleted: bool,
}

impl TestNamespace {
    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace (and so everything in it). On a real cluster
    /// the namespace may stay `Terminating` for a while; this does not wait.
    pub async fn delete(mut self) {
        self.deleted = true;
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(&self.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("cannot delete test namespace {}: {e}", self.name),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // A test that panicked before `delete` still cleans up when it can.
        if self.deleted {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let api: Api<Namespace> = Api::all(self.client.clone());
            let name = self.name.clone();
            handle.spawn(async move {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            });
        }
    }
}

/// A DNS-label name `{prefix}-{suffix}` unique within this machine and run.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mix =
        (t ^ (u64::from(std::process::id()) << 20) ^ n.wrapping_mul(0x9E37_79B9)) % 36u64.pow(6);
    let mut suffix = String::new();
    let mut m = mix;
    for _ in 0..6 {
        let d = (m % 36) as u32;
        suffix.push(char::from_digit(d, 36).unwrap_or('x'));
        m /= 36;
    }
    let prefix: String = prefix
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{prefix}-{suffix}{n}")
}

/// The cluster for this test: the one `TENDRIL_E2E_KUBECONFIG` names, or a
/// fresh in-repo [`ApiServer`]. Must be called inside a tokio runtime.
pub async fn cluster() -> TestCluster {
    cluster_with(Options::default()).await
}

/// Like [`cluster`], but an in-repo server is started with `options` (a real
/// cluster ignores them: it has its own timings).
pub async fn cluster_with(options: Options) -> TestCluster {
    match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
                panic!("{KUBECONFIG_ENV}={}: cannot read: {e}", path.display())
            });
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: unusable: {e}", path.display()));
            let client = kube::Client::try_from(config)
                .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: no client: {e}", path.display()));
            TestCluster {
                client,
                kubeconfig: path,
                server: None,
                owned_file: None,
            }
        }
        None => {
            let server = ApiServer::start_with(options);
            let file = std::env::temp_dir().join(format!(
                "tendril-test-apiserver-{}-{}.kubeconfig",
                std::process::id(),
                server.addr().port()
            ));
            server
                .write_kubeconfig(&file)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
            TestCluster {
                client: server.client(),
                kubeconfig: file.clone(),
                server: Some(server),
                owned_file: Some(file),
            }
        }
    }
}

/// A generous default for waiting on a cluster in tests (real clusters and
/// a loaded machine are slow).
pub const WAIT: Duration = Duration::from_secs(60);
