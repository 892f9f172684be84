//! An S3-compatible bucket, spoken to with reqwest and SigV4 (aws-sigv4).

use super::ArtifactError;
use crate::Secret;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use std::time::{Duration, SystemTime};

/// AWS credentials for signing S3 requests.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret<String>>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` from a list of variables (e.g. a terraform child's).
    pub fn from_vars(vars: &[(String, Secret<String>)]) -> Option<S3Credentials> {
        let find = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Some(S3Credentials {
            access_key_id: find("AWS_ACCESS_KEY_ID")?.into_inner(),
            secret_access_key: find("AWS_SECRET_ACCESS_KEY")?,
            session_token: find("AWS_SESSION_TOKEN"),
        })
    }

    /// Reads the same variables from tendril's own environment.
    pub fn from_env() -> Option<S3Credentials> {
        let vars: Vec<(String, Secret<String>)> = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ]
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| (k.to_string(), Secret::new(v)))
        })
        .collect();
        S3Credentials::from_vars(&vars)
    }
}

/// A bucket on AWS S3 (virtual-hosted URLs) or on a custom endpoint (path-style URLs).
#[derive(Debug, Clone)]
pub struct S3Store {
    client: reqwest::Client,
    bucket: String,
    region: String,
    endpoint: Option<String>,
    prefix: String,
    credentials: S3Credentials,
}

pub(super) fn http_client() -> Result<reqwest::Client, ArtifactError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|source| ArtifactError::Transport {
            location: "(client setup)".into(),
            source,
        })
}

/// Percent-encodes each `/`-separated segment of an object key.
pub(super) fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            let mut out = String::new();
            for b in seg.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Reads a response body, refusing more than `limit` bytes.
pub(super) async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
    location: &str,
) -> Result<Vec<u8>, ArtifactError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ArtifactError::TooLarge {
            location: location.to_string(),
            limit,
        });
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| ArtifactError::Transport {
            location: location.to_string(),
            source,
        })?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(ArtifactError::TooLarge {
                location: location.to_string(),
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Maps a non-success response to an error (body trimmed to 500 characters).
pub(super) async fn status_error(resp: reqwest::Response, location: &str) -> ArtifactError {
    let status = resp.status().as_u16();
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    match status {
        404 => ArtifactError::NotFound {
            location: location.to_string(),
        },
        401 | 403 => ArtifactError::Unauthorised {
            location: location.to_string(),
            status,
            body,
        },
        _ => ArtifactError::Http {
            location: location.to_string(),
            status,
            body,
        },
    }
}

impl S3Store {
    /// A store for `bucket`; keys are `{prefix}{path}`.
    pub fn new(
        bucket: &str,
        region: &str,
        endpoint: Option<&str>,
        prefix: &str,
        credentials: S3Credentials,
    ) -> Result<S3Store, ArtifactError> {
        Ok(S3Store {
            client: http_client()?,
            bucket: bucket.to_string(),
            region: region.to_string(),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            prefix: prefix.to_string(),
            credentials,
        })
    }

    fn url(&self, path: &str) -> String {
        let key = encode_key(&format!("{}{path}", self.prefix));
        match &self.endpoint {
            Some(ep) => format!("{ep}/{}/{key}", encode_key(&self.bucket)),
            None => format!(
                "https://{}.s3.{}.amazonaws.com/{key}",
                self.bucket, self.region
            ),
        }
    }

    /// `s3://bucket/prefix+path`.
    pub fn location(&self, path: &str) -> String {
        format!("s3://{}/{}{path}", self.bucket, self.prefix)
    }

    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ArtifactError> {
        let url = self.url(path);
        let location = self.location(path);
        let signing_err = |problem: String| ArtifactError::Signing {
            location: location.clone(),
            problem,
        };
        let identity = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            self.credentials.secret_access_key.expose(),
            self.credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().clone()),
            None,
            "tendril",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| signing_err(e.to_string()))?
            .into();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let signable = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing_err(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_err(e.to_string()))?
            .into_parts();
        let mut req = self.client.request(method, &url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        for (k, v) in instructions.headers() {
            req = req.header(k, v);
        }
        Ok(req)
    }

    /// PUT one object.
    pub async fn put_object(
        &self,
        path: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), ArtifactError> {
        let location = self.location(path);
        let resp = self
            .signed(reqwest::Method::PUT, path, bytes, Some(content_type))?
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|source| ArtifactError::Transport {
                location: location.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &location).await);
        }
        Ok(())
    }

    /// GET one object, refusing more than `limit` bytes.
    pub async fn get_object(&self, path: &str, limit: u64) -> Result<Vec<u8>, ArtifactError> {
        let location = self.location(path);
        let resp = self
            .signed(reqwest::Method::GET, path, &[], None)?
            .send()
            .await
            .map_err(|source| ArtifactError::Transport {
                location: location.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &location).await);
        }
        read_capped(resp, limit, &location).await
    }
}
