//! Google OAuth access tokens for Vertex AI, cached and refreshed before expiry, shared by every
//! Vertex endpoint.
//!
//! Sources, as the Google auth libraries pick them:
//! - `GOOGLE_APPLICATION_CREDENTIALS` naming a file of `"type": "service_account"`: an RS256 JWT
//!   assertion signed with the key (jsonwebtoken), exchanged at the file's `token_uri`;
//! - the same variable naming `"type": "external_account"` (workload identity federation): the
//!   subject token from `credential_source` (file or URL, re-read on every refresh) exchanged at
//!   `token_url` (Google STS), then, if `service_account_impersonation_url` is set, traded for
//!   a service account's token;
//! - otherwise the GCE / GKE metadata server (Workload Identity on GKE), at
//!   `GCE_METADATA_HOST` or `metadata.google.internal`.

use super::{HttpClient, http_client};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant, timeout};

/// Refresh this long before a token expires, so no request carries one that expires in flight.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub enum Source {
    Metadata { url: Uri },
    ServiceAccount { email: String, key: Box<jsonwebtoken::EncodingKey>, key_id: Option<String>, token_uri: String },
    External(Box<External>),
}

pub struct External {
    audience: String,
    subject_token_type: String,
    token_url: String,
    impersonation_url: Option<String>,
    subject: Subject,
}

enum Subject {
    File { path: PathBuf, field: Option<String> },
    Url { url: String, headers: Vec<(String, String)>, field: Option<String> },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Metadata { url } => write!(f, "metadata server ({url})"),
            Source::ServiceAccount { email, .. } => write!(f, "service account key ({email})"),
            Source::External(e) => write!(f, "external account ({})", e.audience),
        }
    }
}

impl Source {
    pub fn from_env() -> Result<Source, String> {
        if let Some(path) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
            return Self::from_file(&PathBuf::from(path));
        }
        let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
        let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
        Ok(Source::Metadata { url: url.parse().map_err(|e| format!("bad GCE_METADATA_HOST `{host}`: {e}"))? })
    }

    /// A credentials file: `service_account` or `external_account`.
    pub fn from_file(path: &std::path::Path) -> Result<Source, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{shown} is not JSON: {e}"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let need = |k: &str| s(k).ok_or_else(|| format!("{shown} has no `{k}`"));
        match s("type").as_deref() {
            Some("service_account") => {
                let pem = need("private_key")?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("{shown}: private_key is not an RSA PEM key: {e}"))?;
                Ok(Source::ServiceAccount {
                    email: need("client_email")?,
                    key: Box::new(key),
                    key_id: s("private_key_id"),
                    token_uri: s("token_uri").unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
                })
            }
            Some("external_account") => {
                let cs = v.get("credential_source").ok_or_else(|| format!("{shown} has no `credential_source`"))?;
                let field = cs
                    .pointer("/format/type")
                    .and_then(Value::as_str)
                    .filter(|t| *t == "json")
                    .and_then(|_| cs.pointer("/format/subject_token_field_name").and_then(Value::as_str))
                    .map(str::to_owned);
                let subject = if let Some(file) = cs.get("file").and_then(Value::as_str) {
                    Subject::File { path: file.into(), field }
                } else if let Some(url) = cs.get("url").and_then(Value::as_str) {
                    let headers = cs
                        .get("headers")
                        .and_then(Value::as_object)
                        .map(|h| h.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
                        .unwrap_or_default();
                    Subject::Url { url: url.to_owned(), headers, field }
                } else {
                    return Err(format!("{shown}: only file and url credential sources are supported"));
                };
                Ok(Source::External(Box::new(External {
                    audience: need("audience")?,
                    subject_token_type: need("subject_token_type")?,
                    token_url: s("token_url").unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into()),
                    impersonation_url: s("service_account_impersonation_url"),
                    subject,
                })))
            }
            other => Err(format!("{shown}: credentials of type {other:?} are not supported")),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub struct GcpToken {
    source: Source,
    client: HttpClient,
    cached: Mutex<Option<(HeaderValue, Instant)>>,
}

impl std::fmt::Debug for GcpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GcpToken({:?})", self.source)
    }
}

impl GcpToken {
    pub fn new(source: Source) -> Arc<Self> {
        Arc::new(GcpToken { source, client: http_client(Duration::from_secs(2)), cached: Mutex::new(None) })
    }

    /// `Bearer <token>`, fetched once and reused until close to expiry; concurrent callers wait
    /// for the one fetch.
    pub async fn authorization(&self) -> Result<HeaderValue, String> {
        let mut cached = self.cached.lock().await;
        if let Some((v, expires)) = cached.as_ref()
            && Instant::now() + REFRESH_BEFORE_EXPIRY < *expires
        {
            return Ok(v.clone());
        }
        let (token, lifetime) = self.fetch().await.map_err(|e| format!("{:?}: {e}", self.source))?;
        let mut v =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| "token is not a valid header value")?;
        v.set_sensitive(true);
        *cached = Some((v.clone(), Instant::now() + lifetime));
        Ok(v)
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        match &self.source {
            Source::Metadata { url } => {
                let req = Request::get(url.clone()).header("metadata-flavor", "Google");
                let body = self.send(req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?).await?;
                token_response(&body)
            }
            Source::ServiceAccount { email, key, key_id, token_uri } => {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let claims =
                    serde_json::json!({"iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600});
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion =
                    jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("signing the JWT: {e}"))?;
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("assertion", &assertion)
                    .finish();
                token_response(&self.post_form(token_uri, form).await?)
            }
            Source::External(e) => {
                let subject = self.subject_token(&e.subject).await?;
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
                    .append_pair("audience", &e.audience)
                    .append_pair("scope", SCOPE)
                    .append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
                    .append_pair("subject_token", &subject)
                    .append_pair("subject_token_type", &e.subject_token_type)
                    .finish();
                let (federated, lifetime) = token_response(&self.post_form(&e.token_url, form).await?)?;
                let Some(url) = &e.impersonation_url else { return Ok((federated, lifetime)) };
                let body = serde_json::json!({"delegates": [], "scope": [SCOPE], "lifetime": "3600s"}).to_string();
                let req = Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {federated}"))
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_slice(&self.send(req).await?)
                    .map_err(|e| format!("generateAccessToken reply: {e}"))?;
                let token = v
                    .get("accessToken")
                    .and_then(Value::as_str)
                    .ok_or("generateAccessToken reply has no accessToken")?;
                let expires = v
                    .get("expireTime")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::from_str(t, Format::DateTime).ok())
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(Duration::from_secs(3600));
                Ok((token.to_owned(), expires))
            }
        }
    }

    async fn subject_token(&self, s: &Subject) -> Result<String, String> {
        let (raw, field) = match s {
            Subject::File { path, field } => (
                std::fs::read(path).map_err(|e| format!("cannot read subject token {}: {e}", path.display()))?.into(),
                field,
            ),
            Subject::Url { url, headers, field } => {
                let mut req = Request::get(url.as_str());
                for (k, v) in headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                (self.send(req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?).await?, field)
            }
        };
        match field {
            None => Ok(String::from_utf8_lossy(&raw).trim().to_owned()),
            Some(f) => serde_json::from_slice::<Value>(&raw)
                .ok()
                .and_then(|v| v.get(f).and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| format!("subject token has no `{f}` field")),
        }
    }

    async fn post_form(&self, url: &str, form: String) -> Result<Bytes, String> {
        let req = Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Bytes, String> {
        let url = req.uri().clone();
        let resp = timeout(FETCH_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = timeout(FETCH_TIMEOUT, Limited::new(resp.into_body(), 64 * 1024).collect())
            .await
            .map_err(|_| format!("{url} stalled"))?
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            // OAuth errors are `{"error","error_description"}`: safe to show, no token inside.
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            let why = v.get("error_description").or(v.get("error")).map(Value::to_string).unwrap_or_default();
            return Err(format!("{url} answered {status} {why}"));
        }
        Ok(body)
    }
}

fn token_response(body: &[u8]) -> Result<(String, Duration), String> {
    let t: TokenResponse = serde_json::from_slice(body).map_err(|e| format!("token response: {e}"))?;
    Ok((t.access_token, Duration::from_secs(t.expires_in.unwrap_or(3600))))
}
