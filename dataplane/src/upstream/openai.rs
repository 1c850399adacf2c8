//! OpenAI and OpenAI-compatible upstreams (vLLM, TGI, Ollama, LiteLLM, …): the caller's body goes
//! out as it came in, with `model` replaced by the endpoint's model.

use super::credentials::Credential;
use super::{HttpClient, http_client};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use serde_json::{Map, Value};
use spillway_api::config::{Auth, Endpoint, Provider};
use std::time::Duration;

const OPENAI_BASE: &str = "https://api.openai.com/v1";

pub struct OpenAiUpstream {
    pub client: HttpClient,
    chat_url: Uri,
    credential: Credential,
    headers: HeaderMap,
    model: String,
}

impl OpenAiUpstream {
    /// Builds the upstream for a validated endpoint. Errors name what is missing (an unset key
    /// variable, an unreadable key file) without ever including a key.
    pub fn new(endpoint: &Endpoint) -> Result<Self, String> {
        let base = endpoint.base_url.as_deref().unwrap_or(OPENAI_BASE).trim_end_matches('/');
        let chat_url: Uri =
            format!("{base}/chat/completions").parse().map_err(|e| format!("base_url `{base}` is not a URL: {e}"))?;
        let credential = match (&endpoint.auth, endpoint.provider) {
            (Some(Auth::None), _) => Credential::None,
            (Some(Auth::ApiKey { env: Some(var), .. }), _) => Credential::from_env(var)?,
            (Some(Auth::ApiKey { file: Some(path), .. }), _) => Credential::from_file(path.clone())?,
            (None, Provider::Openai) => Credential::from_env("OPENAI_API_KEY")?,
            (None, _) => Credential::None,
            (Some(other), _) => return Err(format!("auth {other:?} does not apply to OpenAI-compatible endpoints")),
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &endpoint.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header `{k}`"))?;
            headers.insert(name, value);
        }
        Ok(OpenAiUpstream {
            client: http_client(Duration::from_millis(endpoint.connect_timeout_ms)),
            chat_url,
            credential,
            headers,
            model: endpoint.model.clone(),
        })
    }

    /// The upstream request for one attempt. `body` is the caller's, and its `model` is
    /// overwritten with this endpoint's model.
    pub fn request(&self, body: &mut Map<String, Value>, request_id: &str) -> Request<Full<Bytes>> {
        body.insert("model".into(), Value::String(self.model.clone()));
        // Serialising a serde_json::Map cannot fail: keys are strings and values are JSON.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let mut req = Request::new(Full::new(Bytes::from(bytes)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.chat_url.clone();
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("spillway/", env!("CARGO_PKG_VERSION"))));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-spillway-request-id", v);
        }
        if let Some(auth) = self.credential.authorization() {
            h.insert(header::AUTHORIZATION, auth);
        }
        req
    }
}
