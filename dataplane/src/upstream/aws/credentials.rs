//! The AWS credential chain, cached and refreshed before expiry, shared by every Bedrock endpoint.
//!
//! Sources, in the AWS SDKs' order, each configured by the SDKs' own environment variables:
//! 1. static keys: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. web identity (EKS IRSA, any OIDC): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` → STS
//!    AssumeRoleWithWebIdentity (the token file is re-read on every refresh: kubelet rotates it);
//! 3. container credentials (EKS Pod Identity, ECS): `AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!    `_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` / `_TOKEN`;
//! 4. EC2 IMDSv2 (unless `AWS_EC2_METADATA_DISABLED=true`).
//!
//! Service endpoints can be pointed elsewhere (`AWS_ENDPOINT_URL_STS`,
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`), as the SDKs allow, which is how tests use local fakes.

use crate::upstream::{HttpClient, http_client};
use aws_credential_types::Credentials;
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant, timeout};

/// Refresh this long before a credential expires, so no request is signed with one that
/// expires in flight.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where credentials come from.
pub enum Source {
    /// Fixed keys; never expire.
    Static(Credentials),
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
        session_name: String,
        sts: String,
    },
    Container {
        uri: String,
        token_file: Option<PathBuf>,
        token: Option<String>,
    },
    Imds {
        base: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Static(_) => f.write_str("static keys"),
            Source::WebIdentity { role_arn, .. } => write!(f, "web identity ({role_arn})"),
            Source::Container { uri, .. } => write!(f, "container credentials ({uri})"),
            Source::Imds { base } => write!(f, "IMDSv2 ({base})"),
        }
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

impl Source {
    /// The first source the environment configures.
    pub fn from_env() -> Result<Source, String> {
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Source::Static(Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment")));
        }
        if let (Some(role_arn), Some(token_file)) = (env("AWS_ROLE_ARN"), env("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
            let sts = env("AWS_ENDPOINT_URL_STS").unwrap_or_else(|| match region {
                Some(r) => format!("https://sts.{r}.amazonaws.com"),
                None => "https://sts.amazonaws.com".into(),
            });
            let session_name = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| {
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                format!("spillway-{now}")
            });
            return Ok(Source::WebIdentity { role_arn, token_file: token_file.into(), session_name, sts });
        }
        let uri = env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .or_else(|| env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|p| format!("http://169.254.170.2{p}")));
        if let Some(uri) = uri {
            return Ok(Source::Container {
                uri,
                token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
                token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            });
        }
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err("no AWS credentials: no keys, web identity or container credentials in the environment, \
                        and IMDS is disabled"
                .into());
        }
        let base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
        Ok(Source::Imds { base: base.trim_end_matches('/').to_owned() })
    }

    async fn load(&self, client: &HttpClient) -> Result<Credentials, String> {
        match self {
            Source::Static(c) => Ok(c.clone()),
            Source::WebIdentity { role_arn, token_file, session_name, sts } => {
                let jwt = std::fs::read_to_string(token_file)
                    .map_err(|e| format!("cannot read web identity token {}: {e}", token_file.display()))?;
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("Action", "AssumeRoleWithWebIdentity")
                    .append_pair("Version", "2011-06-15")
                    .append_pair("RoleArn", role_arn)
                    .append_pair("RoleSessionName", session_name)
                    .append_pair("WebIdentityToken", jwt.trim())
                    .finish();
                let url = format!("{}/", sts.trim_end_matches('/'));
                let req = Request::post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
                    .map_err(|e| e.to_string())?;
                let (status, body) = fetch(client, req).await?;
                parse_sts(status, &body)
            }
            Source::Container { uri, token_file, token } => {
                let auth = match (token_file, token) {
                    (Some(f), _) => Some(
                        std::fs::read_to_string(f)
                            .map_err(|e| format!("cannot read container token {}: {e}", f.display()))?
                            .trim()
                            .to_owned(),
                    ),
                    (None, t) => t.clone(),
                };
                let mut req = Request::get(uri.as_str());
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
                let (status, body) = fetch(client, req).await?;
                if !status.is_success() {
                    return Err(format!("container credentials endpoint answered {status}"));
                }
                parse_json_credentials(&body, "container credentials")
            }
            Source::Imds { base } => {
                let token_req = Request::builder()
                    .method(Method::PUT)
                    .uri(format!("{base}/latest/api/token"))
                    .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let (status, token) = fetch(client, token_req).await?;
                if !status.is_success() {
                    return Err(format!("IMDSv2 token request answered {status}"));
                }
                let token = String::from_utf8_lossy(&token).trim().to_owned();
                let get = |path: String| {
                    Request::get(format!("{base}{path}"))
                        .header("x-aws-ec2-metadata-token", token.as_str())
                        .body(Full::new(Bytes::new()))
                        .map_err(|e| e.to_string())
                };
                let (status, role) = fetch(client, get("/latest/meta-data/iam/security-credentials/".into())?).await?;
                if !status.is_success() {
                    return Err(format!("IMDSv2 role lookup answered {status} (no instance profile?)"));
                }
                let role = String::from_utf8_lossy(&role).lines().next().unwrap_or_default().trim().to_owned();
                let (status, body) =
                    fetch(client, get(format!("/latest/meta-data/iam/security-credentials/{role}"))?).await?;
                if !status.is_success() {
                    return Err(format!("IMDSv2 credentials for role `{role}` answered {status}"));
                }
                parse_json_credentials(&body, "IMDSv2")
            }
        }
    }
}

async fn fetch(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes), String> {
    let url = req.uri().clone();
    let resp = timeout(FETCH_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = timeout(FETCH_TIMEOUT, Limited::new(resp.into_body(), 256 * 1024).collect())
        .await
        .map_err(|_| format!("{url} stalled"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn expiry(s: &str) -> Result<SystemTime, String> {
    DateTime::from_str(s, Format::DateTime)
        .ok()
        .and_then(|d| SystemTime::try_from(d).ok())
        .ok_or_else(|| format!("bad Expiration `{s}`"))
}

/// STS's XML reply, or its `ErrorResponse`, whose code is returned.
fn parse_sts(status: http::StatusCode, body: &[u8]) -> Result<Credentials, String> {
    let text = std::str::from_utf8(body).map_err(|_| "STS reply is not UTF-8")?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("STS reply is not XML: {e}"))?;
    let find = |name: &str| doc.descendants().find(|n| n.has_tag_name(name)).and_then(|n| n.text()).map(str::trim);
    if !status.is_success() || find("Code").is_some() {
        return Err(format!(
            "STS AssumeRoleWithWebIdentity failed ({status}): {}: {}",
            find("Code").unwrap_or("unknown"),
            find("Message").unwrap_or("")
        ));
    }
    let need = |name: &str| find(name).ok_or_else(|| format!("STS reply has no {name}"));
    Ok(Credentials::new(
        need("AccessKeyId")?,
        need("SecretAccessKey")?,
        Some(need("SessionToken")?.to_owned()),
        Some(expiry(need("Expiration")?)?),
        "web identity",
    ))
}

/// `{"AccessKeyId","SecretAccessKey","Token","Expiration"}` of container credentials and IMDS.
fn parse_json_credentials(body: &[u8], what: &str) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Creds {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let c: Creds = serde_json::from_slice(body).map_err(|e| format!("{what} reply: {e}"))?;
    let expires = c.expiration.as_deref().map(expiry).transpose()?;
    Ok(Credentials::new(c.access_key_id, c.secret_access_key, c.token, expires, "container or instance"))
}

/// Credentials shared across requests: loaded once, reused until close to expiry, refreshed by
/// one request while the others wait for the same result. Refresh times run on tokio's clock.
pub struct AwsCredentials {
    source: Source,
    client: HttpClient,
    cached: Mutex<Option<(Credentials, Option<Instant>)>>,
}

impl AwsCredentials {
    pub fn new(source: Source) -> Arc<Self> {
        Arc::new(AwsCredentials { source, client: http_client(Duration::from_secs(2)), cached: Mutex::new(None) })
    }

    pub async fn get(&self) -> Result<Credentials, String> {
        let mut cached = self.cached.lock().await;
        if let Some((c, refresh_at)) = cached.as_ref()
            && refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(c.clone());
        }
        let fresh = self.source.load(&self.client).await.map_err(|e| format!("{:?}: {e}", self.source))?;
        let refresh_at = fresh.expiry().map(|e| {
            let left = e.duration_since(SystemTime::now()).unwrap_or_default();
            Instant::now() + left.saturating_sub(REFRESH_BEFORE_EXPIRY)
        });
        *cached = Some((fresh.clone(), refresh_at));
        Ok(fresh)
    }
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsCredentials({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_fixtures_parse() {
        let ok =
            include_bytes!("../../../../tests/fixtures/credentials/aws_sts_assume_role_with_web_identity_response.xml");
        let c = parse_sts(http::StatusCode::OK, ok).unwrap();
        assert_eq!(c.access_key_id(), "ASIAEXAMPLEACCESSKEY");
        assert!(c.session_token().is_some() && c.expiry().is_some());
        let err = include_bytes!("../../../../tests/fixtures/credentials/aws_sts_error_invalid_identity_token.xml");
        let e = parse_sts(http::StatusCode::BAD_REQUEST, err).unwrap_err();
        assert!(e.contains("InvalidIdentityToken"), "{e}");
    }

    #[test]
    fn container_fixture_parses() {
        let text = include_bytes!("../../../../tests/fixtures/credentials/aws_container_credentials_response.json");
        let v: serde_json::Value = serde_json::from_slice(text).unwrap();
        let body = v.get("body").cloned().unwrap_or(v);
        let c = parse_json_credentials(body.to_string().as_bytes(), "container").unwrap();
        assert!(c.session_token().is_some() && c.expiry().is_some());
    }
}
