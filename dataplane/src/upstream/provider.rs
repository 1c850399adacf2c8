//! HTTP providers: where a request goes, how it is authenticated, which protocol it speaks.
//!
//! | provider | URL | key header (default env) | protocol |
//! |---|---|---|---|
//! | `openai` | `{base_url=https://api.openai.com/v1}/chat/completions`, `…/responses` | Bearer (`OPENAI_API_KEY`) | OpenAI, Responses |
//! | `openai_compatible` | `{base_url}/chat/completions` (and `…/responses` with `api: responses`) | Bearer (none) | OpenAI (, Responses) |
//! | `azure_openai` | `{base_url}/openai/deployments/{model}/chat/completions?api-version=`, `{base_url}/openai/v1/responses` | `api-key` (`AZURE_OPENAI_API_KEY`) | OpenAI, Responses |
//! | `anthropic` | `{base_url=https://api.anthropic.com}/v1/messages` | `x-api-key` (`ANTHROPIC_API_KEY`) | Anthropic |
//! | `vertex` | `https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/publishers/{google\|anthropic}/models/{model}:{op}` | Google OAuth (metadata server) | Gemini, or Anthropic bodies |
//! | `bedrock` | `{base_url=https://bedrock-runtime.{region}.amazonaws.com}/model/{model}/{converse[-stream] \| invoke[-with-response-stream]}` | SigV4 (AWS chain) | Converse, or Anthropic bodies |

use super::aws::credentials::{AwsCredentials, Source};
use super::aws::sigv4;
use super::credentials::{Credential, Scheme};
use super::failure::{AttemptFailure, FailureKind};
use super::gcp::{self, GcpToken};
use super::secrets::SecretPolicy;
use super::{HttpClient, http_client};
use crate::outcome::Outcome;
use crate::protocol::openai::MaxTokensField;
use crate::protocol::{Protocol, Wire};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use spillway_api::config::{Auth, Endpoint, Provider};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const AZURE_API_VERSION: &str = "2024-10-21";
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What an upstream request asks the provider for: it picks the URL, and on Bedrock and Vertex
/// the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A reply to a conversation; `stream`: as a stream.
    Generate { stream: bool },
    /// How many input tokens a conversation would use.
    CountTokens,
    /// Embedding vectors of texts.
    Embed,
}

pub struct Upstream {
    pub client: HttpClient,
    /// What the provider speaks on the wire.
    pub wire: Wire,
    /// How the output limit is spelled when a request is translated to OpenAI.
    pub max_tokens_field: MaxTokensField,
    headers: HeaderMap,
    model: String,
    kind: Kind,
    /// Why this endpoint has no credentials (an unset key variable, an unreadable key file, no
    /// cloud credential source). Such an endpoint is skipped, not a reason to refuse the config:
    /// every other endpoint and feature keeps serving.
    missing_credential: Option<String>,
}

/// A provider authenticated by a key header.
struct Keyed {
    url: Uri,
    /// Where the provider serves the Responses API, if it does (the model always goes in the
    /// body there, Azure's deployment name included).
    responses_url: Option<Uri>,
    /// Where it counts input tokens (Anthropic's count_tokens, OpenAI's Responses
    /// `input_tokens`), if it does; the model goes in the body.
    count_url: Option<Uri>,
    /// Where it embeds texts (`/embeddings`), if it does.
    embed_url: Option<Uri>,
    credential: Credential,
    /// Whether the body carries the model (Azure takes it from the deployment URL).
    model_in_body: bool,
    api_version: Option<HeaderValue>,
}

enum Kind {
    Keyed(Box<Keyed>),
    /// Bedrock: the operation (and so the URL) depends on streaming; requests are SigV4-signed.
    Bedrock {
        base: String,
        region: String,
        credentials: Option<Arc<AwsCredentials>>,
    },
    /// Vertex AI: `{model_url}:{operation}` with a Google bearer token.
    Vertex {
        model_url: String,
        token: Option<Arc<GcpToken>>,
    },
}

/// The process-wide value in `cell`, made on first use; a failed attempt leaves it unset so a
/// later config can try again (once the environment is fixed).
fn shared<T>(cell: &OnceLock<Arc<T>>, make: impl FnOnce() -> Result<Arc<T>, String>) -> Result<Arc<T>, String> {
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let v = make()?;
    Ok(cell.get_or_init(|| v).clone())
}

/// One token cache for every Vertex endpoint of the process.
fn gcp_token() -> Result<Arc<GcpToken>, String> {
    static SHARED: OnceLock<Arc<GcpToken>> = OnceLock::new();
    shared(&SHARED, || Ok(GcpToken::new(gcp::Source::from_env()?)))
}

/// Bedrock path labels are percent-encoded except for the unreserved characters, so an ARN's
/// `:` and `/` travel as `%3A` and `%2F` (botocore does the same).
const MODEL_ID: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One credential cache for every Bedrock endpoint of the process.
fn aws_credentials() -> Result<Arc<AwsCredentials>, String> {
    static SHARED: OnceLock<Arc<AwsCredentials>> = OnceLock::new();
    shared(&SHARED, || Ok(AwsCredentials::new(Source::from_env()?)))
}

impl Upstream {
    /// Builds the upstream for a validated endpoint. Missing credentials do not fail it (see
    /// [`Upstream::missing_credential`]); errors and reasons never include a key.
    pub fn new(e: &Endpoint, secrets: &SecretPolicy) -> Result<Self, String> {
        let base = |default: &str| e.base_url.as_deref().unwrap_or(default).trim_end_matches('/').to_owned();
        let responses_url = match (e.provider, e.api.as_deref()) {
            (Provider::Openai, _) => Some(format!("{}/responses", base("https://api.openai.com/v1"))),
            (Provider::AzureOpenai, _) => Some(format!("{}/openai/v1/responses", base(""))),
            (Provider::OpenaiCompatible, Some("responses")) => Some(format!("{}/responses", base(""))),
            _ => None,
        };
        let azure_version = e.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
        let count_url = match e.provider {
            Provider::Anthropic => Some(format!("{}/v1/messages/count_tokens", base("https://api.anthropic.com"))),
            _ => responses_url.as_ref().map(|r| format!("{r}/input_tokens")),
        };
        let embed_url = match e.provider {
            Provider::Openai => Some(format!("{}/embeddings", base("https://api.openai.com/v1"))),
            Provider::OpenaiCompatible => Some(format!("{}/embeddings", base(""))),
            Provider::AzureOpenai => {
                Some(format!("{}/openai/deployments/{}/embeddings?api-version={azure_version}", base(""), e.model))
            }
            _ => None,
        };
        let parse = |u: Option<String>| match u {
            Some(u) => u.parse::<Uri>().map(Some).map_err(|err| format!("`{u}` is not a URL: {err}")),
            None => Ok(None),
        };
        let (responses_url, count_url, embed_url) = (parse(responses_url)?, parse(count_url)?, parse(embed_url)?);
        let (url, wire, scheme, default_env, max_field) = match e.provider {
            Provider::Openai => (
                format!("{}/chat/completions", base("https://api.openai.com/v1")),
                Wire::OpenAi,
                Scheme::Bearer,
                Some("OPENAI_API_KEY"),
                MaxTokensField::MaxCompletionTokens,
            ),
            Provider::OpenaiCompatible => (
                format!("{}/chat/completions", base("")),
                Wire::OpenAi,
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
                Wire::OpenAi,
                Scheme::Header(HeaderName::from_static("api-key")),
                Some("AZURE_OPENAI_API_KEY"),
                MaxTokensField::MaxCompletionTokens,
            ),
            Provider::Anthropic => (
                format!("{}/v1/messages", base("https://api.anthropic.com")),
                Wire::Anthropic,
                Scheme::Header(HeaderName::from_static("x-api-key")),
                Some("ANTHROPIC_API_KEY"),
                MaxTokensField::MaxTokens,
            ),
            Provider::Bedrock => return Self::bedrock(e, secrets),
            Provider::Vertex => return Self::vertex(e, secrets),
        };
        let url: Uri = url.parse().map_err(|err| format!("`{url}` is not a URL: {err}"))?;
        let host = url.host().unwrap_or_default();
        let from_env =
            |var: &str, scheme| secrets.check_env(var, host).and_then(|()| Credential::from_env(var, scheme));
        let from_file = |path: &PathBuf, scheme| {
            secrets.check_file(path).and_then(|()| Credential::from_file(path.clone(), scheme))
        };
        let credential = match &e.auth {
            Some(Auth::None) => Ok(Credential::none()),
            Some(Auth::ApiKey { env: Some(var), .. }) => from_env(var, scheme),
            Some(Auth::ApiKey { file: Some(path), .. }) => from_file(path, scheme),
            Some(Auth::BearerToken { env: Some(var), .. }) => from_env(var, Scheme::Bearer),
            Some(Auth::BearerToken { file: Some(path), .. }) => from_file(path, Scheme::Bearer),
            None => match default_env {
                Some(var) => from_env(var, scheme),
                None => Ok(Credential::none()),
            },
            Some(other) => return Err(format!("auth {other:?} does not apply to provider {}", e.provider.as_str())),
        };
        let (credential, missing_credential) = match credential {
            Ok(c) => (c, None),
            Err(why) => (Credential::none(), Some(why)),
        };
        let headers = extra_headers(e)?;
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
            headers,
            model: e.model.clone(),
            kind: Kind::Keyed(Box::new(Keyed {
                url,
                responses_url,
                count_url,
                embed_url,
                credential,
                model_in_body: e.provider != Provider::AzureOpenai,
                api_version,
            })),
            missing_credential,
        })
    }

    fn vertex(e: &Endpoint, secrets: &SecretPolicy) -> Result<Self, String> {
        let region = e.region.clone().ok_or("vertex needs a region")?;
        let project = e.project.clone().ok_or("vertex needs a project")?;
        let (wire, publisher) = if e.api.as_deref() == Some("anthropic") {
            (Wire::VertexAnthropic, "anthropic")
        } else {
            (Wire::VertexGemini, "google")
        };
        let model_url = vertex_model_url(e.base_url.as_deref(), &region, &project, publisher, &e.model);
        let host = model_url.parse::<Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_default();
        let token = secrets
            .check_cloud_host(&host, ".googleapis.com")
            .and_then(|()| gcp_token().map_err(|e| format!("Google credentials: {e}")));
        Ok(Upstream {
            client: http_client(Duration::from_millis(e.connect_timeout_ms)),
            wire,
            max_tokens_field: MaxTokensField::MaxTokens,
            headers: extra_headers(e)?,
            model: e.model.clone(),
            missing_credential: token.as_ref().err().cloned(),
            kind: Kind::Vertex { model_url, token: token.ok() },
        })
    }

    fn bedrock(e: &Endpoint, secrets: &SecretPolicy) -> Result<Self, String> {
        let region = e.region.clone().ok_or("bedrock needs a region")?;
        let base = e
            .base_url
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"))
            .trim_end_matches('/')
            .to_owned();
        let wire = if e.api.as_deref() == Some("invoke") { Wire::BedrockInvoke } else { Wire::BedrockConverse };
        let host = base.parse::<Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_default();
        let credentials = secrets
            .check_cloud_host(&host, ".amazonaws.com")
            .and_then(|()| aws_credentials().map_err(|e| format!("AWS credentials: {e}")));
        Ok(Upstream {
            client: http_client(Duration::from_millis(e.connect_timeout_ms)),
            wire,
            max_tokens_field: MaxTokensField::MaxTokens,
            headers: extra_headers(e)?,
            model: e.model.clone(),
            missing_credential: credentials.as_ref().err().cloned(),
            kind: Kind::Bedrock { base, region, credentials: credentials.ok() },
        })
    }

    /// Why this endpoint cannot be sent to, if its credentials are missing.
    pub fn missing_credential(&self) -> Option<&str> {
        self.missing_credential.as_deref()
    }

    /// What this endpoint speaks to a caller of `client`: the Responses API to a Responses
    /// caller where the provider serves it, its one wire otherwise.
    pub fn wire_for(&self, client: Protocol) -> Wire {
        match &self.kind {
            Kind::Keyed(k) if client == Protocol::Responses && k.responses_url.is_some() => Wire::OpenAiResponses,
            _ => self.wire,
        }
    }

    /// The provider's model id, for bodies built from the canonical form.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The upstream request for one attempt. `body` is in the provider's wire format; for keyed
    /// providers its `model` is set to this endpoint's. `client_headers` are the caller's, of
    /// which only the protocol headers that shape the reply (`anthropic-version`,
    /// `anthropic-beta`) are forwarded, and only to a provider of the caller's own protocol.
    ///
    /// For [`Operation::Generate`] the body's Anthropic fields are moved where the wire wants
    /// them; the bodies of other operations are sent as built.
    pub async fn request(
        &self,
        body: &mut Map<String, Value>,
        wire: Wire,
        op: Operation,
        client_headers: Option<&HeaderMap>,
        request_id: &str,
    ) -> Result<Request<Full<Bytes>>, AttemptFailure> {
        if let Some(why) = &self.missing_credential {
            return Err(AttemptFailure::no_credentials(why.as_str()));
        }
        let url = self.url(wire, op)?;
        if let Kind::Keyed(k) = &self.kind {
            let in_body = match op {
                Operation::Generate { .. } => k.model_in_body || wire == Wire::OpenAiResponses,
                Operation::CountTokens => true,
                Operation::Embed => k.model_in_body,
            };
            if in_body {
                body.insert("model".into(), Value::String(self.model.clone()));
            } else {
                body.remove("model");
            }
        }
        let betas = client_headers.and_then(|h| h.get("anthropic-beta"));
        if let Operation::Generate { .. } = op {
            self.wire.place_anthropic_fields(body, betas.and_then(|b| b.to_str().ok()));
        }
        // Serialising a serde_json::Map cannot fail: keys are strings and values are JSON.
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let mut req = Request::new(Full::new(bytes.clone()));
        *req.method_mut() = Method::POST;
        let h = req.headers_mut();
        h.extend(self.headers.clone());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::USER_AGENT, HeaderValue::from_static(concat!("spillway/", env!("CARGO_PKG_VERSION"))));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::headers::REQUEST_ID, v);
        }
        *req.uri_mut() = url;
        match &self.kind {
            Kind::Keyed(k) => {
                let h = req.headers_mut();
                if let Some(version) = &k.api_version {
                    let client_version = client_headers.and_then(|c| c.get("anthropic-version"));
                    h.insert("anthropic-version", client_version.unwrap_or(version).clone());
                    if let Some(beta) = client_headers.and_then(|c| c.get("anthropic-beta")) {
                        h.insert("anthropic-beta", beta.clone());
                    }
                }
                if let Some((name, value)) = k.credential.header() {
                    h.insert(name, value);
                }
            }
            Kind::Vertex { token, .. } => {
                let token =
                    token.as_ref().ok_or_else(|| AttemptFailure::no_credentials("no Google identity was found"))?;
                let auth = token.authorization().await.map_err(|e| AttemptFailure {
                    kind: FailureKind::Auth,
                    outcome: Outcome::Credentials,
                    detail: format!("Google credentials: {e}"),
                    retry_after: None,
                    reply: None,
                })?;
                req.headers_mut().insert(header::AUTHORIZATION, auth);
                // Claude on Vertex takes an Anthropic caller's betas as the same header.
                if let Some(b) = betas.filter(|_| self.wire == Wire::VertexAnthropic) {
                    req.headers_mut().insert("anthropic-beta", b.clone());
                }
            }
            Kind::Bedrock { region, credentials, .. } => {
                let streaming = matches!(op, Operation::Generate { stream: true }) && self.wire == Wire::BedrockInvoke;
                let accept = if streaming { "x-amzn-bedrock-accept" } else { "accept" };
                req.headers_mut().insert(accept, HeaderValue::from_static("application/json"));
                let credentials =
                    credentials.as_ref().ok_or_else(|| AttemptFailure::no_credentials("the AWS chain found none"))?;
                let creds = credentials.get().await.map_err(|e| AttemptFailure {
                    kind: FailureKind::Auth,
                    outcome: Outcome::Credentials,
                    detail: format!("AWS credentials: {e}"),
                    retry_after: None,
                    reply: None,
                })?;
                sigv4::sign_request(&mut req, &bytes, &creds, region, std::time::SystemTime::now())
                    .map_err(|e| AttemptFailure::unavailable(Outcome::Internal, e))?;
            }
        }
        Ok(req)
    }

    /// Where `op` goes for a caller answered in `wire`; an operation the provider does not offer
    /// is this endpoint's to decline (another may offer it).
    fn url(&self, wire: Wire, op: Operation) -> Result<Uri, AttemptFailure> {
        let offered = |url: &Option<Uri>, what: &str| {
            url.clone().ok_or_else(|| AttemptFailure::unsupported(format!("this provider offers no {what}")))
        };
        let url = match (&self.kind, op) {
            (Kind::Keyed(k), Operation::Generate { .. }) if wire == Wire::OpenAiResponses => {
                return offered(&k.responses_url, "Responses API");
            }
            (Kind::Keyed(k), Operation::Generate { .. }) => return Ok(k.url.clone()),
            (Kind::Keyed(k), Operation::CountTokens) => return offered(&k.count_url, "token counting"),
            (Kind::Keyed(k), Operation::Embed) => return offered(&k.embed_url, "embeddings"),
            (Kind::Vertex { model_url, .. }, op) => match (self.wire, op) {
                (Wire::VertexAnthropic, Operation::Generate { stream: false }) => format!("{model_url}:rawPredict"),
                (Wire::VertexAnthropic, Operation::Generate { stream: true }) => {
                    format!("{model_url}:streamRawPredict")
                }
                // Claude's token counter is one model of the publisher, named in the body.
                (Wire::VertexAnthropic, Operation::CountTokens) => {
                    let parent = model_url.rsplit_once('/').map_or(model_url.as_str(), |(p, _)| p);
                    format!("{parent}/count-tokens:rawPredict")
                }
                (Wire::VertexAnthropic, Operation::Embed) => {
                    return Err(AttemptFailure::unsupported("Claude on Vertex AI has no embeddings"));
                }
                (_, Operation::Generate { stream: false }) => format!("{model_url}:generateContent"),
                (_, Operation::Generate { stream: true }) => format!("{model_url}:streamGenerateContent?alt=sse"),
                (_, Operation::CountTokens) => format!("{model_url}:countTokens"),
                (_, Operation::Embed) => format!("{model_url}:predict"),
            },
            (Kind::Bedrock { base, .. }, op) => {
                let name = match (self.wire, op) {
                    (Wire::BedrockInvoke, Operation::Generate { stream: false }) | (_, Operation::Embed) => "invoke",
                    (Wire::BedrockInvoke, Operation::Generate { stream: true }) => "invoke-with-response-stream",
                    (_, Operation::Generate { stream: false }) => "converse",
                    (_, Operation::Generate { stream: true }) => "converse-stream",
                    (_, Operation::CountTokens) => "count-tokens",
                };
                bedrock_url(base, &self.model, name)
            }
        };
        url.parse().map_err(|e| AttemptFailure::unavailable(Outcome::Internal, format!("bad URL {url}: {e}")))
    }
}

/// `…/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}` on the
/// regional host, the global host (`global`) or a multi-region one (`us`, `eu`).
fn vertex_model_url(base_url: Option<&str>, region: &str, project: &str, publisher: &str, model: &str) -> String {
    let host = match region {
        "global" => "https://aiplatform.googleapis.com".to_owned(),
        "us" | "eu" => format!("https://aiplatform.{region}.rep.googleapis.com"),
        r => format!("https://{r}-aiplatform.googleapis.com"),
    };
    let base = base_url.map_or(host, str::to_owned);
    let base = base.trim_end_matches('/');
    format!("{base}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}")
}

fn bedrock_url(base: &str, model: &str, op: &str) -> String {
    format!("{base}/model/{}/{op}", utf8_percent_encode(model, MODEL_ID))
}

fn extra_headers(e: &Endpoint) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (k, v) in &e.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header `{k}`"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertex_hosts_for_regional_global_and_multi_region_endpoints() {
        let u = |r: &str| vertex_model_url(None, r, "p", "google", "gemini-2.0-flash-001");
        assert_eq!(
            u("us-central1"),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001"
        );
        assert_eq!(
            u("global"),
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-2.0-flash-001"
        );
        assert!(u("eu").starts_with("https://aiplatform.eu.rep.googleapis.com/v1/projects/p/locations/eu/"));
    }

    #[test]
    fn bedrock_model_ids_are_encoded_as_the_sigv4_vectors_expect() {
        let text = include_str!("../../../tests/fixtures/bedrock/sigv4_vector.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        for vector in v["vectors"].as_array().unwrap() {
            let i = &vector["inputs"];
            let url = i["url"].as_str().unwrap();
            let op = url.rsplit('/').next().unwrap();
            let built =
                bedrock_url("https://bedrock-runtime.us-east-1.amazonaws.com", i["model_id"].as_str().unwrap(), op);
            assert_eq!(built, url);
        }
    }
}
