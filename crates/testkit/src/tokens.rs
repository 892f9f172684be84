//! Local token endpoints for the cloud tests, and a TLS peer that checks bearer tokens.
//!
//! Each endpoint checks what the real one checks and refuses otherwise, with
//! the real service's error shape:
//!
//! - [`GoogleEndpoints`]: Google OAuth2 (`/token`: JWT-bearer grant, RS256
//!   signature against the service account's public key, `iss`, `aud` = the
//!   token URI, `scope`, `exp`/`iat`), Google STS (`/v1/token`: token-exchange
//!   grant, `audience` = the pool provider, `requested_token_type`,
//!   `subject_token_type`, `scope`, and the subject token's signature, issuer,
//!   audience and expiry), and IAM Credentials (`generateAccessToken`: a
//!   bearer token STS issued, the service account, `scope`).
//! - [`AzureEndpoints`]: Azure AD v2 (`/<tenant>/oauth2/v2.0/token`: tenant,
//!   `grant_type=client_credentials`, `client_id`, a `<resource>/.default`
//!   scope, and either the client secret or a client assertion whose
//!   signature, `iss`, `sub` and `aud=api://AzureADTokenExchange` match the
//!   federated credential).
//! - [`TlsApi`]: an HTTPS server with its own CA answering `GET /api` like a
//!   Kubernetes API server, 401 unless a caller-supplied check accepts the
//!   bearer token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tokio_rustls::rustls;

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An RSA key pair, PEM.
#[derive(Clone)]
pub struct RsaKey {
    /// PKCS#8 private key.
    pub private_pem: String,
    /// SPKI public key.
    pub public_pem: String,
}

impl RsaKey {
    /// A fresh 2048-bit key.
    pub fn generate() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key generation");
        RsaKey {
            private_pem: kp.serialize_pem(),
            public_pem: kp.public_key_pem(),
        }
    }

    /// Signs claims as an RS256 JWT with an optional `kid`.
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).expect("encoding key");
        jsonwebtoken::encode(&header, claims, &key).expect("JWT")
    }

    fn verify(&self, token: &str, iss: &str, aud: &str) -> Result<Value, String> {
        let key =
            DecodingKey::from_rsa_pem(self.public_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[iss]);
        v.set_audience(&[aud]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 0;
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// An OIDC issuer minting workload identity tokens (Kubernetes service-account
/// tokens, GitHub Actions tokens...).
#[derive(Clone)]
pub struct Issuer {
    /// `iss`.
    pub iss: String,
    /// The signing key.
    pub key: RsaKey,
}

impl Issuer {
    /// A new issuer with a fresh key.
    pub fn new(iss: &str) -> Self {
        Issuer {
            iss: iss.into(),
            key: RsaKey::generate(),
        }
    }

    /// A token for `sub` and `aud`, valid `ttl` seconds (negative: already expired).
    pub fn mint(&self, sub: &str, aud: &str, ttl: i64) -> String {
        let n = now();
        self.key.sign(
            &json!({"iss": self.iss, "sub": sub, "aud": aud, "iat": n - 5, "exp": n + ttl}),
            None,
        )
    }
}

/// A request as the handlers see it.
pub struct Req {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Query string (may be empty).
    pub query: String,
    /// Headers, lowercase names.
    pub headers: HashMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Req {
    /// The body as a form.
    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The bearer token.
    pub fn bearer(&self) -> Option<&str> {
        self.headers.get("authorization")?.strip_prefix("Bearer ")
    }
}

type Handler = Arc<dyn Fn(&Req) -> (u16, Value) + Send + Sync>;

/// A server on a background thread; stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `handler` on 127.0.0.1:0, over TLS when `tls` is given.
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stopped => break,
                        r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    };
                    let handler = handler.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: hyper::Request<Incoming>| {
                            let handler = handler.clone();
                            async move { Ok::<_, hyper::Error>(handle(req, handler).await) }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(a) => {
                                if let Ok(tls) = a.accept(stream).await {
                                    let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    });
                }
            });
        });
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(req: hyper::Request<Incoming>, handler: Handler) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let req = Req {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    };
    let (status, value) = handler(&req);
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("response")
}

fn oauth_error(status: u16, error: &str, description: &str) -> (u16, Value) {
    (
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// Google's OAuth2, STS and IAM Credentials endpoints, for one service account
/// and one workload identity pool provider.
pub struct GoogleEndpoints {
    server: Server,
    /// The service account's key.
    pub sa_key: RsaKey,
    /// The service account (key owner and impersonation target).
    pub sa_email: String,
    /// The workload identity provider's trusted issuer.
    pub issuer: Issuer,
    /// The pool provider (`audience` of the exchange).
    pub audience: String,
    /// Tokens issued so far: (kind, token).
    pub issued: Arc<Mutex<Vec<(String, String)>>>,
}

const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

impl GoogleEndpoints {
    /// Starts the endpoints; tokens last `ttl` seconds.
    pub fn start(ttl: u64) -> Self {
        let sa_key = RsaKey::generate();
        let sa_email = "deployer@shop-prod.iam.gserviceaccount.com".to_string();
        let issuer = Issuer::new("https://token.actions.example.com");
        let audience = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/ci/providers/gh".to_string();
        let issued: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let counter = Arc::new(AtomicU64::new(0));
        let token_url: Arc<Mutex<String>> = Arc::default();
        let handler: Handler = {
            let (sa_key, sa_email, issuer, audience, issued, token_url) = (
                sa_key.clone(),
                sa_email.clone(),
                issuer.clone(),
                audience.clone(),
                issued.clone(),
                token_url.clone(),
            );
            Arc::new(move |req: &Req| {
                let give = |kind: &str| {
                    let t = format!("ya29.{kind}-{}", counter.fetch_add(1, Ordering::SeqCst));
                    issued.lock().unwrap().push((kind.to_string(), t.clone()));
                    t
                };
                let f = req.form();
                let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
                match (req.method.as_str(), req.path.as_str()) {
                    ("POST", "/token") => {
                        if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
                            return oauth_error(
                                400,
                                "unsupported_grant_type",
                                "Invalid grant_type",
                            );
                        }
                        let aud = token_url.lock().unwrap().clone();
                        let claims = match sa_key.verify(field("assertion"), &sa_email, &aud) {
                            Ok(c) => c,
                            Err(e) => {
                                return oauth_error(
                                    400,
                                    "invalid_grant",
                                    &format!("Invalid JWT: {e}"),
                                );
                            }
                        };
                        let scope = claims["scope"].as_str().unwrap_or_default();
                        if !scope.split(' ').any(|s| s == CLOUD_PLATFORM) {
                            return oauth_error(
                                400,
                                "invalid_scope",
                                "Invalid OAuth scope or ID token audience provided.",
                            );
                        }
                        let iat = claims["iat"].as_i64().unwrap_or(0);
                        let exp = claims["exp"].as_i64().unwrap_or(0);
                        if iat > now() + 60 || exp - iat > 3600 {
                            return oauth_error(
                                400,
                                "invalid_grant",
                                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
                            );
                        }
                        (
                            200,
                            json!({"access_token": give("sa"), "expires_in": ttl, "token_type": "Bearer"}),
                        )
                    }
                    ("POST", "/v1/token") => {
                        if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
                        {
                            return oauth_error(
                                400,
                                "invalid_request",
                                "Invalid value for \"grant_type\".",
                            );
                        }
                        if field("requested_token_type")
                            != "urn:ietf:params:oauth:token-type:access_token"
                        {
                            return oauth_error(
                                400,
                                "invalid_request",
                                "Invalid value for \"requested_token_type\".",
                            );
                        }
                        if field("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt" {
                            return oauth_error(
                                400,
                                "invalid_request",
                                "Invalid value for \"subject_token_type\".",
                            );
                        }
                        if field("audience") != audience {
                            return oauth_error(
                                400,
                                "invalid_target",
                                "The target service indicated by the \"audience\" parameters is invalid.",
                            );
                        }
                        if !field("scope").split(' ').any(|s| s == CLOUD_PLATFORM) {
                            return oauth_error(400, "invalid_scope", "Invalid scope.");
                        }
                        let allowed_aud = format!("https:{audience}");
                        if let Err(e) =
                            issuer
                                .key
                                .verify(field("subject_token"), &issuer.iss, &allowed_aud)
                        {
                            return oauth_error(
                                400,
                                "invalid_grant",
                                &format!("The subject token is invalid: {e}"),
                            );
                        }
                        (
                            200,
                            json!({
                                "access_token": give("federated"),
                                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                                "token_type": "Bearer",
                                "expires_in": ttl
                            }),
                        )
                    }
                    ("POST", path) if path.starts_with("/v1/projects/-/serviceAccounts/") => {
                        let want = format!(
                            "/v1/projects/-/serviceAccounts/{sa_email}:generateAccessToken"
                        );
                        if path != want {
                            return (
                                404,
                                json!({"error": {"code": 404, "message": "Not found; Gaia id not found for email", "status": "NOT_FOUND"}}),
                            );
                        }
                        let known = req.bearer().is_some_and(|b| {
                            issued
                                .lock()
                                .unwrap()
                                .iter()
                                .any(|(k, t)| k == "federated" && t == b)
                        });
                        if !known {
                            return (
                                401,
                                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
                            );
                        }
                        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                        let scopes: Vec<&str> = body["scope"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                            .unwrap_or_default();
                        if !scopes.contains(&CLOUD_PLATFORM) {
                            return (
                                400,
                                json!({"error": {"code": 400, "message": "Scope required.", "status": "INVALID_ARGUMENT"}}),
                            );
                        }
                        let expire = jiff_like_rfc3339(now() + ttl as i64);
                        (
                            200,
                            json!({"accessToken": give("impersonated"), "expireTime": expire}),
                        )
                    }
                    _ => (404, json!({"error": "not_found"})),
                }
            })
        };
        let server = Server::start(None, handler);
        *token_url.lock().unwrap() = format!("http://{}/token", server.addr());
        GoogleEndpoints {
            server,
            sa_key,
            sa_email,
            issuer,
            audience,
            issued,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// A service-account key file for the account.
    pub fn service_account_key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "shop-prod",
            "private_key_id": "0123abcd",
            "private_key": self.sa_key.private_pem,
            "client_email": self.sa_email,
            "client_id": "1000",
            "token_uri": format!("{}/token", self.url()),
        })
        .to_string()
    }

    /// An external_account configuration reading its subject token from `subject_file`.
    pub fn external_account_json(
        &self,
        subject_file: &std::path::Path,
        impersonate: bool,
    ) -> String {
        let mut v = json!({
            "type": "external_account",
            "audience": self.audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", self.url()),
            "credential_source": {"file": subject_file},
        });
        if impersonate {
            v["service_account_impersonation_url"] = json!(format!(
                "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
                self.url(),
                self.sa_email
            ));
        }
        v.to_string()
    }

    /// A subject token the provider accepts (audience `https:` + the provider name).
    pub fn subject_token(&self, ttl: i64) -> String {
        self.issuer.mint(
            "repo:acme/shop:ref:refs/heads/main",
            &format!("https:{}", self.audience),
            ttl,
        )
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, no dependency).
fn jiff_like_rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Azure AD's v2 token endpoint for one tenant and one app.
pub struct AzureEndpoints {
    server: Server,
    /// The tenant.
    pub tenant_id: String,
    /// The app.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: String,
    /// The federated credential's issuer.
    pub issuer: Issuer,
    /// The federated credential's subject.
    pub subject: String,
    /// Scopes of the tokens issued so far.
    pub scopes: Arc<Mutex<Vec<String>>>,
    /// The AKS cluster the ARM API knows (resource ID).
    pub cluster_id: String,
    /// The kubeconfig ARM hands out for it (`listClusterUserCredential`).
    pub cluster_kubeconfig: Arc<Mutex<String>>,
}

/// The ARM scope.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

impl AzureEndpoints {
    /// Starts the endpoint; tokens last `ttl` seconds.
    pub fn start(ttl: u64) -> Self {
        let tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47".to_string();
        let client_id = "0d1e2f3a-1111-2222-3333-444455556666".to_string();
        let client_secret = "s3cr3t~value".to_string();
        let issuer = Issuer::new("https://oidc.prod-aks.azure.com/tenant/issuer/");
        let subject = "system:serviceaccount:tendril:deployer".to_string();
        let scopes: Arc<Mutex<Vec<String>>> = Arc::default();
        let counter = Arc::new(AtomicU64::new(0));
        let cluster_id = "/subscriptions/0b1c2d3e-0000-4000-8000-123456789abc/resourceGroups/shop-prod/providers/Microsoft.ContainerService/managedClusters/shop-prod".to_string();
        let cluster_kubeconfig: Arc<Mutex<String>> = Arc::default();
        let issued: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let handler: Handler = {
            let (tenant_id, client_id, client_secret, issuer, subject, scopes) = (
                tenant_id.clone(),
                client_id.clone(),
                client_secret.clone(),
                issuer.clone(),
                subject.clone(),
                scopes.clone(),
            );
            let (cluster_id, cluster_kubeconfig) = (cluster_id.clone(), cluster_kubeconfig.clone());
            Arc::new(move |req: &Req| {
                if req.path.starts_with("/subscriptions/") {
                    let arm_error = |status: u16, code: &str, message: &str| {
                        (status, json!({"error": {"code": code, "message": message}}))
                    };
                    let authorized = req.bearer().is_some_and(|b| {
                        issued
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|(s, t)| s == ARM_SCOPE && t == b)
                    });
                    if !authorized {
                        return arm_error(
                            401,
                            "InvalidAuthenticationToken",
                            "The access token is invalid or not for https://management.azure.com.",
                        );
                    }
                    if !req
                        .query
                        .split('&')
                        .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
                    {
                        return arm_error(
                            400,
                            "MissingApiVersionParameter",
                            "The api-version query parameter (?api-version=) is required for all requests.",
                        );
                    }
                    let (id, kind) = match req.path.rsplit_once('/') {
                        Some((id, "listClusterUserCredential")) => (id, "clusterUser"),
                        Some((id, "listClusterAdminCredential")) => (id, "clusterAdmin"),
                        _ => return arm_error(404, "NotFound", "unknown operation"),
                    };
                    if req.method != "POST" || !id.eq_ignore_ascii_case(&cluster_id) {
                        return arm_error(
                            404,
                            "ResourceNotFound",
                            "The Resource 'Microsoft.ContainerService/managedClusters' was not found.",
                        );
                    }
                    let value = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        cluster_kubeconfig.lock().unwrap().as_bytes(),
                    );
                    return (
                        200,
                        json!({"kubeconfigs": [{"name": kind, "value": value}]}),
                    );
                }
                if req.method != "POST" || req.path != format!("/{tenant_id}/oauth2/v2.0/token") {
                    return oauth_error(400, "invalid_tenant", "AADSTS90002: Tenant not found.");
                }
                let f = req.form();
                let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
                if field("grant_type") != "client_credentials" {
                    return oauth_error(
                        400,
                        "unsupported_grant_type",
                        "AADSTS70003: The app requested an unsupported grant type.",
                    );
                }
                if field("client_id") != client_id {
                    return oauth_error(
                        400,
                        "unauthorized_client",
                        "AADSTS700016: Application not found in the directory.",
                    );
                }
                let scope = field("scope");
                if !scope.ends_with("/.default") || scope.contains(' ') {
                    return oauth_error(
                        400,
                        "invalid_scope",
                        "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                    );
                }
                match (f.get("client_secret"), f.get("client_assertion")) {
                    (Some(s), None) if *s == client_secret => {}
                    (Some(_), None) => {
                        return oauth_error(
                            401,
                            "invalid_client",
                            "AADSTS7000215: Invalid client secret provided.",
                        );
                    }
                    (None, Some(a)) => {
                        if field("client_assertion_type")
                            != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                        {
                            return oauth_error(
                                400,
                                "invalid_request",
                                "AADSTS50027: client_assertion_type is invalid.",
                            );
                        }
                        match issuer
                            .key
                            .verify(a, &issuer.iss, "api://AzureADTokenExchange")
                        {
                            Ok(claims) if claims["sub"] == subject.as_str() => {}
                            Ok(_) => {
                                return oauth_error(
                                    400,
                                    "invalid_client",
                                    "AADSTS70021: No matching federated identity record found for presented assertion subject.",
                                );
                            }
                            Err(e) => {
                                return oauth_error(
                                    400,
                                    "invalid_client",
                                    &format!("AADSTS700024: Client assertion is not valid: {e}"),
                                );
                            }
                        }
                    }
                    _ => {
                        return oauth_error(
                            400,
                            "invalid_request",
                            "AADSTS7000218: The request body must contain client_assertion or client_secret.",
                        );
                    }
                }
                scopes.lock().unwrap().push(scope.to_string());
                let token = format!("aad-{}", counter.fetch_add(1, Ordering::SeqCst));
                issued
                    .lock()
                    .unwrap()
                    .push((scope.to_string(), token.clone()));
                (
                    200,
                    json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}),
                )
            })
        };
        AzureEndpoints {
            server: Server::start(None, handler),
            tenant_id,
            client_id,
            client_secret,
            issuer,
            subject,
            scopes,
            cluster_id,
            cluster_kubeconfig,
        }
    }

    /// The ARM endpoint (the same server), `http://127.0.0.1:PORT`.
    pub fn arm(&self) -> String {
        self.authority()
    }

    /// The authority host, `http://127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// A client assertion the federated credential accepts.
    pub fn assertion(&self, ttl: i64) -> String {
        self.issuer
            .mint(&self.subject, "api://AzureADTokenExchange", ttl)
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's TLS configuration.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A fresh CA and server certificate.
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tendril test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        let cert = params.signed_by(&key, &ca).expect("server cert");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca.der().clone()], key_der)
            .expect("server config");
        TestCa {
            ca_pem: ca.pem(),
            server_config: Arc::new(config),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTPS peer answering `GET /api` like a Kubernetes API server: 401 with a
/// Status unless `accept(token)` says yes. Records every bearer token seen.
pub struct TlsApi {
    server: Server,
    /// The CA that signed the server certificate.
    pub ca_pem: String,
    /// Bearer tokens seen, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl TlsApi {
    /// Starts the server.
    pub fn start(accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        let ca = TestCa::new();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let handler: Handler = {
            let seen = seen.clone();
            Arc::new(move |req: &Req| {
                let token = req.bearer().unwrap_or_default().to_string();
                seen.lock().unwrap().push(token.clone());
                if !accept(&token) {
                    return (
                        401,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
                    );
                }
                match req.path.as_str() {
                    "/api" => (
                        200,
                        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}),
                    ),
                    _ => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404}),
                    ),
                }
            })
        };
        TlsApi {
            server: Server::start(Some(ca.server_config.clone()), handler),
            ca_pem: ca.ca_pem,
            seen,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }
}
