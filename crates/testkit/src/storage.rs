//! A local HTTP server speaking Supabase Storage's object API, for tests.
//!
//! It implements what tendril uses, with the answers Supabase Storage gives:
//!
//! - `POST /storage/v1/object/{bucket}/{path}` stores an object; without
//!   `x-upsert: true` an existing object is refused (HTTP 400, `statusCode`
//!   `"409"`, `Duplicate`);
//! - `PUT /storage/v1/object/{bucket}/{path}` replaces an existing object;
//! - `GET /storage/v1/object/{bucket}/{path}` (and `.../object/authenticated/...`)
//!   returns it; a missing object is HTTP 400 with `statusCode` `"404"`;
//! - every request needs the key as `apikey` (else HTTP 401) and as
//!   `Authorization: Bearer` (else HTTP 400 with `statusCode` `"403"`).
//!
//! The server runs on its own thread and runtime on 127.0.0.1 (port 0), so
//! it serves sync and async tests alike; it stops when dropped.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    buckets: HashMap<String, HashMap<String, (String, Vec<u8>)>>,
    requests: Vec<String>,
}

/// A running Supabase Storage stand-in.
pub struct SupabaseStorage {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupabaseStorage {
    /// Starts a server that accepts `service_key`.
    pub fn start(service_key: &str) -> SupabaseStorage {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let key = service_key.to_string();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("storage server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("send addr");
                loop {
                    tokio::select! {
                        _ = &mut shutdown_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let st = st.clone();
                            let key = key.clone();
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    let st = st.clone();
                                    let key = key.clone();
                                    async move { Ok::<_, std::convert::Infallible>(handle(req, &st, &key).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv().expect("the storage server did not start");
        SupabaseStorage {
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The project URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        self.lock().buckets.entry(name.to_string()).or_default();
    }

    /// An object's bytes, read directly.
    pub fn object(&self, bucket: &str, path: &str) -> Option<Vec<u8>> {
        self.lock()
            .buckets
            .get(bucket)
            .and_then(|b| b.get(path))
            .map(|(_, bytes)| bytes.clone())
    }

    /// Writes an object directly (to simulate tampering or a partial upload).
    pub fn put_object(&self, bucket: &str, path: &str, bytes: Vec<u8>) {
        self.lock()
            .buckets
            .entry(bucket.to_string())
            .or_default()
            .insert(path.to_string(), ("application/octet-stream".into(), bytes));
    }

    /// `METHOD /path` of every request served so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SupabaseStorage {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn storage_error(code: &str, error: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({"statusCode": code, "error": error, "message": message}),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(req: Request<Incoming>, state: &Mutex<State>, key: &str) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_string();
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .requests
        .push(format!("{method} {raw_path}"));
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if header("apikey").as_deref() != Some(key) {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"message": "Invalid API key"}),
        );
    }
    if header("authorization").as_deref() != Some(&format!("Bearer {key}")) {
        return storage_error("403", "Unauthorized", "invalid signature");
    }
    let Some(rest) = raw_path.strip_prefix("/storage/v1/object/") else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"message": "no Route matched with those values"}),
        );
    };
    let rest = rest.strip_prefix("authenticated/").unwrap_or(rest);
    let Some((bucket, path)) = rest.split_once('/') else {
        return storage_error("400", "Invalid Input", "object path is missing");
    };
    let bucket = percent_decode(bucket);
    let path = percent_decode(path);
    let upsert = header("x-upsert").as_deref() == Some("true");
    let content_type = header("content-type").unwrap_or_else(|| "application/octet-stream".into());
    match method {
        Method::POST | Method::PUT => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().to_vec(),
                Err(_) => return storage_error("400", "Invalid Input", "body could not be read"),
            };
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let Some(objects) = st.buckets.get_mut(&bucket) else {
                return storage_error("404", "Bucket not found", "Bucket not found");
            };
            let exists = objects.contains_key(&path);
            if method == Method::POST && exists && !upsert {
                return storage_error("409", "Duplicate", "The resource already exists");
            }
            if method == Method::PUT && !exists {
                return storage_error("404", "not_found", "Object not found");
            }
            objects.insert(path.clone(), (content_type, body));
            json(
                StatusCode::OK,
                serde_json::json!({"Key": format!("{bucket}/{path}"), "Id": format!("{:x}", path.len())}),
            )
        }
        Method::GET => {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            match st.buckets.get(&bucket).and_then(|b| b.get(&path)) {
                Some((ct, bytes)) => {
                    let mut resp = Response::new(Full::new(Bytes::from(bytes.clone())));
                    if let Ok(v) = hyper::header::HeaderValue::from_str(ct) {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    resp
                }
                None => storage_error("404", "not_found", "Object not found"),
            }
        }
        _ => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"message": "method not allowed"}),
        ),
    }
}
