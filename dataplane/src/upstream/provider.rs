//! HTTP providers: where a request goes, how it is authenticated, which protocol it speaks.
//!
//! | provider | URL | key header (default env) | protocol |
//! |---|---|---|---|
//! | `openai` | `{base_url=https://api.openai.com/v1}/chat/completions` | Bearer (`OPENAI_API_KEY`) | OpenAI |
//! | `openai_compatible` | `{base_url}/chat/completions` | Bearer (none) | OpenAI |
//! | `azure_openai` | `{base_url}/openai/deployments/{model}/chat/completions?api-version=` | `api-key` (`AZURE_OPENAI_API_KEY`) | OpenAI |
//! | `anthropic` | `{base_url=https://api.anthropic.com}/v1/messages` | `x-api-key` (`ANTHROPIC_API_KEY`) | Anthropic |

use super::credentials::{Credential, Scheme};
use super::{HttpClient, http_client};
use crate::protocol::Protocol;
use crate::protocol::openai::MaxTokensField;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use serde_json::{Map, Value};
use spillway_api::config::{Auth, Endpoint, Provider};
use std::time::Duration;

const AZURE_API_VERSION: &str = "2024-10-21";
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct Upstream {
    pub client: HttpClient,
    /// The protocol of the provider's API.
    pub wire: Protocol,
    /// How the output limit is spelled when a request is translated to OpenAI.
    pub max_tokens_field: MaxTokensField,
    url: Uri,
    credential: Credential,
    headers: HeaderMap,
    model: String,
    /// Whether the body carries the model (Azure takes it from the deployment URL).
    model_in_body: bool,
    api_version: Option<HeaderValue>,
}

impl Upstream {
    /// Builds the upstream for a validated endpoint. Errors name what is missing (an unset key
    /// variable, an unreadable key file) without ever including a key.
    pub fn new(e: &Endpoint) -> Result<Self, String> {
        let base = |default: &str| e.base_url.as_deref().unwrap_or(default).trim_end_matches('/').to_owned();
        let (url, wire, scheme, default_env, max_field) = match e.provider {
            Provider::Openai => (
                format!("{}/chat/completions", base("https://api.openai.com/v1")),
                Protocol::OpenAi,
                Scheme::Bearer,
                Some("OPENAI_API_KEY"),
                MaxTokensField::MaxCompletionTokens,
            ),
            Provider::OpenaiCompatible => (
                format!("{}/chat/completions", base("")),
                Protocol::OpenAi,
                Scheme::Bearer,
                None,
                MaxTokensField::MaxTokens,
            ),
            Provider::AzureOpenai => (
                format!(
                    "{}/openai/deployments/{}/chat/completions?api-version={}",
                    base(""),
                    e.model,
                    e.api_version.as_deref().unwrap_or(AZURE_API_VERSION)
                ),
                Protocol::OpenAi,
                Scheme::Header(HeaderName::from_static("api-key")),
                Some("AZURE_OPENAI_API_KEY"),
                MaxTokensField::MaxCompletionTokens,
            ),
            Provider::Anthropic => (
                format!("{}/v1/messages", base("https://api.anthropic.com")),
                Protocol::Anthropic,
                Scheme::Header(HeaderName::from_static("x-api-key")),
                Some("ANTHROPIC_API_KEY"),
                MaxTokensField::MaxTokens,
            ),
            other => return Err(format!("provider `{}` is not an HTTP-key provider", other.as_str())),
        };
        let url: Uri = url.parse().map_err(|err| format!("`{url}` is not a URL: {err}"))?;
        let credential = match &e.auth {
            Some(Auth::None) => Credential::none(),
            Some(Auth::ApiKey { env: Some(var), .. }) => Credential::from_env(var, scheme)?,
            Some(Auth::ApiKey { file: Some(path), .. }) => Credential::from_file(path.clone(), scheme)?,
            None => match default_env {
                Some(var) => Credential::from_env(var, scheme)?,
                None => Credential::none(),
            },
            Some(other) => return Err(format!("auth {other:?} does not apply to provider {}", e.provider.as_str())),
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &e.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header `{k}`"))?;
            headers.insert(name, value);
        }
        let api_version = match e.provider {
            Provider::Anthropic => Some(
                HeaderValue::from_str(e.api_version.as_deref().unwrap_or(ANTHROPIC_VERSION))
                    .map_err(|_| "api_version is not a valid header value".to_string())?,
            ),
            _ => None,
        };
        Ok(Upstream {
            client: http_client(Duration::from_millis(e.connect_timeout_ms)),
            wire,
            max_tokens_field: max_field,
            url,
            credential,
            headers,
            model: e.model.clone(),
            model_in_body: e.provider != Provider::AzureOpenai,
            api_version,
        })
    }

    /// The provider's model id, for bodies built from the canonical form.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The upstream request for one attempt. `body` is in the provider's protocol; its `model` is
    /// set to this endpoint's. `client_headers` are the caller's, of which only the protocol
    /// headers that shape the reply (`anthropic-version`, `anthropic-beta`) are forwarded, and
    /// only to a provider of the caller's own protocol.
    pub fn request(
        &self,
        body: &mut Map<String, Value>,
        client_headers: Option<&HeaderMap>,
        request_id: &str,
    ) -> Request<Full<Bytes>> {
        if self.model_in_body {
            body.insert("model".into(), Value::String(self.model.clone()));
        } else {
            body.remove("model");
        }
        // Serialising a serde_json::Map cannot fail: keys are strings and values are JSON.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut req = Request::new(Full::new(Bytes::from(bytes)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("spillway/", env!("CARGO_PKG_VERSION"))));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-spillway-request-id", v);
        }
        if let Some(version) = &self.api_version {
            let client_version = client_headers.and_then(|c| c.get("anthropic-version"));
            h.insert("anthropic-version", client_version.unwrap_or(version).clone());
            if let Some(beta) = client_headers.and_then(|c| c.get("anthropic-beta")) {
                h.insert("anthropic-beta", beta.clone());
            }
        }
        if let Some((name, value)) = self.credential.header() {
            h.insert(name, value);
        }
        req
    }
}
