//! Supabase Storage's object API:
//! `POST /storage/v1/object/{bucket}/{path}` (with `x-upsert: true`) to store,
//! `GET /storage/v1/object/{bucket}/{path}` to fetch; every request carries
//! the service key as `apikey` and as `Authorization: Bearer`.

use super::ArtifactError;
use super::s3::{encode_key, http_client, read_capped, status_error};
use crate::Secret;

/// A Supabase Storage bucket.
#[derive(Debug, Clone)]
pub struct SupabaseStore {
    client: reqwest::Client,
    base: String,
    bucket: String,
    key: Secret<String>,
}

impl SupabaseStore {
    /// A store for `bucket` of the project at `url` (`https://<project>.supabase.co`).
    pub fn new(
        url: &str,
        bucket: &str,
        key: Secret<String>,
    ) -> Result<SupabaseStore, ArtifactError> {
        Ok(SupabaseStore {
            client: http_client()?,
            base: url.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            key,
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/storage/v1/object/{}/{}",
            self.base,
            encode_key(&self.bucket),
            encode_key(path)
        )
    }

    /// `supabase://bucket/path` at the project URL.
    pub fn location(&self, path: &str) -> String {
        format!("{} bucket {} object {path}", self.base, self.bucket)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("apikey", self.key.expose())
            .bearer_auth(self.key.expose())
    }

    /// Uploads (or replaces) one object.
    pub async fn put(
        &self,
        path: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), ArtifactError> {
        let location = self.location(path);
        let resp = self
            .authed(self.client.post(self.url(path)))
            .header("content-type", content_type)
            .header("x-upsert", "true")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|source| ArtifactError::Transport {
                location: location.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(supabase_error(resp, &location).await);
        }
        Ok(())
    }

    /// Downloads one object, refusing more than `limit` bytes.
    pub async fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, ArtifactError> {
        let location = self.location(path);
        let resp = self
            .authed(self.client.get(self.url(path)))
            .send()
            .await
            .map_err(|source| ArtifactError::Transport {
                location: location.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(supabase_error(resp, &location).await);
        }
        read_capped(resp, limit, &location).await
    }
}

/// Supabase Storage answers a missing object with HTTP 400 and a JSON body
/// whose `statusCode` is `"404"`; treat that as not found.
async fn supabase_error(resp: reqwest::Response, location: &str) -> ArtifactError {
    let err = status_error(resp, location).await;
    match err {
        ArtifactError::Http {
            status: 400, body, ..
        } if body.contains("\"404\"")
            || body.contains("not_found")
            || body.contains("Object not found") =>
        {
            ArtifactError::NotFound {
                location: location.to_string(),
            }
        }
        ArtifactError::Http {
            status: 400,
            ref body,
            ..
        } if body.contains("\"403\"")
            || body.contains("\"401\"")
            || body.contains("Unauthorized") =>
        {
            let ArtifactError::Http { status, body, .. } = err else {
                return err;
            };
            ArtifactError::Unauthorised {
                location: location.to_string(),
                status,
                body,
            }
        }
        other => other,
    }
}
