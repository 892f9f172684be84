//! The Trellis worker API client.
//!
//! Every request carries `X-Worker-ID` and `X-Worker-Token`; the token is a
//! [`Secret`] and never appears in logs, errors or `Debug` output.
//!
//! | call | endpoint |
//! | --- | --- |
//! | [`TrellisClient::claim`] | `POST /api/jobs/claim` → 200 with a job, or 204 |
//! | [`TrellisClient::update_status`] | `PUT /api/jobs/{id}/status` |
//! | [`TrellisClient::send_logs`] | `POST /api/jobs/{id}/logs` |
//! | [`TrellisClient::heartbeat`] | `POST /api/workers/heartbeat` |
//!
//! Answers map onto [`QueueError`]: network errors, 408, 429 and 5xx are
//! [`QueueError::Unavailable`] (retry); 401 and 403 are
//! [`QueueError::Unauthorized`] (stop the worker); 404, 409 and 410 on a
//! job's endpoints are [`QueueError::JobGone`]: the control plane cancelled
//! or forgot the job, and the worker stops running it.

use super::{ClaimedJob, JobState, LogChunk, QueueError, WorkerState};
use crate::Secret;
use crate::job::{CloudIdentity, Job, JobId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct TrellisConfig {
    /// Base URL (`TRELLIS_URL`), e.g. `https://trellis.example.com`.
    pub url: String,
    /// This worker's id (`GRAPE_WORKER_ID`).
    pub worker_id: String,
    /// This worker's token (`GRAPE_WORKER_TOKEN`).
    pub token: Secret<String>,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

/// A client of the Trellis worker API.
#[derive(Debug, Clone)]
pub struct TrellisClient {
    http: reqwest::Client,
    base: String,
    worker_id: String,
    token: Secret<String>,
}

/// The claim response: `{job: {...}, cloud_identity: {...}}` (the shape of a
/// job file's first two parts) or the job's fields at the top level beside
/// `cloud_identity`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClaimBody {
    Nested {
        job: Job,
        cloud_identity: CloudIdentity,
    },
    Flat {
        #[serde(flatten)]
        job: Job,
        cloud_identity: CloudIdentity,
    },
}

#[derive(Serialize)]
struct StatusBody<'a> {
    status: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_metadata: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct HeartbeatBody<'a> {
    worker_id: &'a str,
    status: &'a str,
    current_job_id: Option<&'a str>,
}

impl TrellisClient {
    /// Builds a client; checks the URL and that id and token are not empty.
    pub fn new(config: TrellisConfig) -> Result<TrellisClient, QueueError> {
        let invalid = |what: &str, message: String| QueueError::Invalid {
            what: what.to_string(),
            message,
        };
        let base = config.url.trim().trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            invalid(
                "TRELLIS_URL",
                format!("`{base}` is not a URL ({e}); give the control plane's base URL, e.g. https://trellis.example.com"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(
                "TRELLIS_URL",
                format!("`{base}` is not an http(s) URL; give the control plane's base URL"),
            ));
        }
        if config.worker_id.trim().is_empty() {
            return Err(invalid(
                "GRAPE_WORKER_ID",
                "is empty; set GRAPE_WORKER_ID or pass --worker-id".into(),
            ));
        }
        if config.token.expose().trim().is_empty() {
            return Err(invalid(
                "GRAPE_WORKER_TOKEN",
                "is empty; set GRAPE_WORKER_TOKEN or pass --worker-token".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tendril/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid("HTTP client", format!("cannot be built: {e}")))?;
        Ok(TrellisClient {
            http,
            base,
            worker_id: config.worker_id,
            token: config.token,
        })
    }

    /// The control plane's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Worker-ID", &self.worker_id)
            .header("X-Worker-Token", self.token.expose())
    }

    async fn send(
        &self,
        what: &str,
        job: Option<&JobId>,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, QueueError> {
        let resp = req.send().await.map_err(|e| QueueError::Unavailable {
            what: what.to_string(),
            message: describe(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let code = status.as_u16();
        let body = resp.text().await.unwrap_or_default();
        let excerpt: String = body.chars().take(300).collect();
        Err(match (code, job) {
            (401 | 403, _) => QueueError::Unauthorized {
                what: what.to_string(),
                status: code,
            },
            (408 | 429, _) | (500..=599, _) => QueueError::Unavailable {
                what: what.to_string(),
                message: format!("HTTP {code} {excerpt}"),
            },
            (404 | 409 | 410, Some(job)) => QueueError::JobGone {
                job: job.clone(),
                reason: format!(
                    "the control plane answered HTTP {code} to {what} (cancelled or no longer assigned to this worker)"
                ),
            },
            (404, None) => QueueError::Invalid {
                what: what.to_string(),
                message: format!(
                    "HTTP 404: the control plane has no such endpoint; check TRELLIS_URL ({})",
                    self.base
                ),
            },
            _ => QueueError::Invalid {
                what: what.to_string(),
                message: format!("HTTP {code}: {excerpt}"),
            },
        })
    }

    /// `POST /api/jobs/claim`: a job, or `None` on 204.
    ///
    /// A claim response that is not a job this worker can read is reported
    /// back as FAILED (when it has an `id`) and returned as
    /// [`QueueError::Invalid`].
    pub async fn claim(&self) -> Result<Option<ClaimedJob>, QueueError> {
        let what = "POST /api/jobs/claim";
        let resp = self
            .send(
                what,
                None,
                self.request(reqwest::Method::POST, "/api/jobs/claim")
                    .json(&serde_json::json!({})),
            )
            .await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = resp.bytes().await.map_err(|e| QueueError::Unavailable {
            what: what.to_string(),
            message: describe(&e),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| QueueError::Invalid {
                what: what.to_string(),
                message: format!("the claim response is not JSON ({e})"),
            })?;
        match serde_json::from_value::<ClaimBody>(value.clone()) {
            Ok(
                ClaimBody::Nested {
                    job,
                    cloud_identity,
                }
                | ClaimBody::Flat {
                    job,
                    cloud_identity,
                },
            ) => Ok(Some(ClaimedJob {
                job,
                cloud_identity,
            })),
            Err(e) => {
                let id = value
                    .pointer("/job/id")
                    .or_else(|| value.get("id"))
                    .and_then(serde_json::Value::as_str)
                    .map(|s| JobId(s.to_string()));
                let message = format!(
                    "the claimed job is not in the documented shape (job id, job_type, vine_id, vineyard_id, config_snapshot, cloud_identity): {e}"
                );
                if let Some(id) = &id {
                    // Best effort: tell the control plane why the job will not run.
                    let _ = self
                        .update_status(id, JobState::Failed, Some(&message), None)
                        .await;
                }
                Err(QueueError::Invalid {
                    what: what.to_string(),
                    message,
                })
            }
        }
    }

    /// `PUT /api/jobs/{id}/status`.
    pub async fn update_status(
        &self,
        job: &JobId,
        status: JobState,
        error_message: Option<&str>,
        execution_metadata: Option<&serde_json::Value>,
    ) -> Result<(), QueueError> {
        self.put_status(
            job,
            StatusBody {
                status,
                error_message,
                error_phase: None,
                execution_metadata: execution_metadata.filter(|m| !m.is_null()),
            },
        )
        .await
    }

    /// `PUT /api/jobs/{id}/status` with a job's final outcome: status,
    /// `error_message`, `error_phase` (the phase it failed in) and
    /// `execution_metadata`.
    pub async fn report_outcome(
        &self,
        job: &JobId,
        outcome: &super::JobOutcome,
    ) -> Result<(), QueueError> {
        self.put_status(
            job,
            StatusBody {
                status: outcome.status.into(),
                error_message: outcome.error_message.as_deref(),
                error_phase: outcome.error_phase.as_deref(),
                execution_metadata: Some(&outcome.execution_metadata).filter(|m| !m.is_null()),
            },
        )
        .await
    }

    async fn put_status(&self, job: &JobId, body: StatusBody<'_>) -> Result<(), QueueError> {
        let status = body.status;
        let path = format!("/api/jobs/{}/status", path_segment(&job.0));
        let what = format!("PUT /api/jobs/{job}/status ({status})");
        self.send(
            &what,
            Some(job),
            self.request(reqwest::Method::PUT, &path).json(&body),
        )
        .await
        .map(drop)
    }

    /// `POST /api/jobs/{id}/logs` with one chunk (already redacted).
    pub async fn send_logs(&self, job: &JobId, chunk: &LogChunk) -> Result<(), QueueError> {
        let path = format!("/api/jobs/{}/logs", path_segment(&job.0));
        let what = format!("POST /api/jobs/{job}/logs");
        self.send(
            &what,
            Some(job),
            self.request(reqwest::Method::POST, &path).json(chunk),
        )
        .await
        .map(drop)
    }

    /// `POST /api/workers/heartbeat`.
    pub async fn heartbeat(
        &self,
        state: WorkerState,
        current: Option<&JobId>,
    ) -> Result<(), QueueError> {
        let body = HeartbeatBody {
            worker_id: &self.worker_id,
            status: state.as_str(),
            current_job_id: current.map(|j| j.0.as_str()),
        };
        self.send(
            "POST /api/workers/heartbeat",
            None,
            self.request(reqwest::Method::POST, "/api/workers/heartbeat")
                .json(&body),
        )
        .await
        .map(drop)
    }
}

/// Percent-encodes a path segment (job ids are UUIDs, but be safe).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reqwest error with its causes, without the URL's query (there is none
/// with secrets, but keep messages short).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(cause) = std::error::Error::source(e) {
        msg.push_str(": ");
        msg.push_str(&crate::errors::chain_inline(cause));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_bodies_nested_and_flat_parse() {
        let nested = serde_json::json!({
            "job": {"id": "j1", "job_type": "PLAN", "vine_id": "v", "vineyard_id": "vy", "config_snapshot": {}},
            "cloud_identity": {"provider": "aws", "role_arn": "arn:aws:iam::123456789012:role/R", "external_id": "x"}
        });
        let flat = serde_json::json!({
            "id": "j2", "job_type": "DEPLOY", "vine_id": "v", "vineyard_id": "vy", "plan_job_id": "p",
            "config_snapshot": {}, "cloud_identity": {"provider": "local"}
        });
        let ClaimBody::Nested { job, .. } = serde_json::from_value(nested).unwrap() else {
            panic!()
        };
        assert_eq!(job.id.0, "j1");
        let (ClaimBody::Flat {
            job,
            cloud_identity,
        }
        | ClaimBody::Nested {
            job,
            cloud_identity,
        }) = serde_json::from_value(flat).unwrap();
        assert_eq!(job.id.0, "j2");
        assert_eq!(job.plan_job_id.unwrap().0, "p");
        assert!(matches!(cloud_identity, CloudIdentity::Local));
    }

    #[test]
    fn path_segments_are_encoded_and_tokens_never_debug_printed() {
        assert_eq!(path_segment("3f0c-9a52"), "3f0c-9a52");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
        let c = TrellisClient::new(TrellisConfig {
            url: "http://127.0.0.1:9/".into(),
            worker_id: "w".into(),
            token: Secret::new("tok-123".into()),
            request_timeout: Duration::from_secs(1),
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("tok-123"));
        assert_eq!(c.base, "http://127.0.0.1:9");
    }

    #[test]
    fn bad_configuration_names_the_variable() {
        let cfg = |url: &str, id: &str, tok: &str| TrellisConfig {
            url: url.into(),
            worker_id: id.into(),
            token: Secret::new(tok.into()),
            request_timeout: Duration::from_secs(1),
        };
        let e = TrellisClient::new(cfg("trellis.example.com", "w", "t")).unwrap_err();
        assert!(e.to_string().contains("TRELLIS_URL"), "{e}");
        let e = TrellisClient::new(cfg("ftp://x", "w", "t")).unwrap_err();
        assert!(e.to_string().contains("TRELLIS_URL"), "{e}");
        let e = TrellisClient::new(cfg("http://x", " ", "t")).unwrap_err();
        assert!(e.to_string().contains("GRAPE_WORKER_ID"), "{e}");
        let e = TrellisClient::new(cfg("http://x", "w", "")).unwrap_err();
        assert!(e.to_string().contains("GRAPE_WORKER_TOKEN"), "{e}");
    }
}
