//! The small HTTP client that GCP and Azure token requests share.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::CloudError;

/// One HTTP client per process is enough; token requests are rare.
pub(crate) fn client(service: &'static str) -> Result<reqwest::Client, CloudError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CloudError::Transport {
            service,
            url: String::new(),
            message: format!("cannot build an HTTP client: {e}"),
        })
}

/// The URL without its query string, for error messages.
pub(crate) fn display_url(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// Sends a request and decodes a JSON answer; a non-2xx answer becomes
/// [`CloudError::Refused`] carrying the service's own error message.
pub(crate) async fn send_json<T: DeserializeOwned>(
    service: &'static str,
    action: &str,
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, CloudError> {
    let transport = |message: String| CloudError::Transport {
        service,
        url: display_url(url),
        message,
    };
    let response = request
        .send()
        .await
        .map_err(|e| transport(crate::errors::chain_inline(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| transport(crate::errors::chain_inline(&e)))?;
    if !status.is_success() {
        return Err(CloudError::Refused {
            service,
            action: action.to_string(),
            message: format!("HTTP {status}: {}", error_message(&body)),
        });
    }
    serde_json::from_str(&body)
        .map_err(|e| transport(format!("the answer is not the expected JSON ({e})")))
}

/// Extracts the human part of an OAuth2 / Google / Azure error body.
fn error_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        let mut text: String = body.chars().take(300).collect();
        if text.is_empty() {
            text = "(empty body)".into();
        }
        return text;
    };
    let mut parts = Vec::new();
    match &v["error"] {
        serde_json::Value::String(code) => parts.push(code.clone()),
        serde_json::Value::Object(o) => {
            // ARM: {"code": "ResourceNotFound", "message": ...}
            if let Some(c) = o.get("code").and_then(|c| c.as_str()) {
                parts.push(c.to_string());
            }
            if let Some(m) = o.get("message").and_then(|m| m.as_str()) {
                parts.push(m.to_string());
            }
            if let Some(s) = o.get("status").and_then(|m| m.as_str()) {
                parts.push(s.to_string());
            }
        }
        _ => {}
    }
    if let Some(d) = v["error_description"].as_str() {
        parts.push(d.to_string());
    }
    if parts.is_empty() {
        body.chars().take(300).collect()
    } else {
        parts.join(": ")
    }
}
