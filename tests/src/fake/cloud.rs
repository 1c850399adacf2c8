//! A fake of the cloud credential services: AWS STS (AssumeRoleWithWebIdentity), the container
//! credentials endpoint (EKS Pod Identity / ECS), EC2 IMDSv2, Google's OAuth token endpoint
//! (service-account JWT assertions, verified), Google STS token exchange and IAM Credentials
//! generateAccessToken. Each issues credentials valid for `lifetime` and counts its calls.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

pub const ACCESS_KEY_ID: &str = "ASIAFAKEFROMCLOUD";
pub const SECRET_ACCESS_KEY: &str = "fake/secret/issued/by/the/cloud/fake";
pub const SESSION_TOKEN: &str = "FAKESESSIONTOKENFROMTHECLOUD";
const IMDS_TOKEN: &str = "AQAEAFAKEIMDSTOKEN==";
const ROLE: &str = "spillway-instance-role";

#[derive(Clone)]
pub struct CloudConfig {
    pub lifetime: Duration,
    /// The web identity token STS accepts (others get `InvalidIdentityToken`); `None` accepts any.
    pub web_identity_token: Option<String>,
    /// The `Authorization` value the container endpoint requires.
    pub container_token: Option<String>,
    /// PEM public key that service-account JWT assertions must verify with.
    pub gcp_public_key: Option<String>,
    /// The subject token Google STS accepts.
    pub gcp_subject_token: Option<String>,
}

pub const GCP_SA_TOKEN: &str = "ya29.fake-service-account-token";
pub const GCP_FEDERATED_TOKEN: &str = "ya29.fake-federated-token";
pub const GCP_IMPERSONATED_TOKEN: &str = "ya29.fake-impersonated-token";

#[derive(Default)]
struct State {
    calls: HashMap<&'static str, u64>,
    web_identity_tokens: Vec<String>,
}

pub struct CloudFake {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudFake {
    pub async fn start(config: CloudConfig) -> std::io::Result<CloudFake> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = (Arc::new(config), state.clone());
        let task = tokio::spawn(async move {
            // A test fixture, as the fake provider.
            #[allow(clippy::disallowed_methods)]
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (config, state) = shared.clone();
                let service = hyper::service::service_fn(move |req| {
                    let (config, state) = (config.clone(), state.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(&config, &state, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(CloudFake { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Calls to one service: `sts`, `container`, `imds-token`, `imds-role`, `imds-credentials`.
    pub fn calls(&self, service: &str) -> u64 {
        self.lock().calls.get(service).copied().unwrap_or(0)
    }

    /// The web identity tokens STS received, in order.
    pub fn web_identity_tokens(&self) -> Vec<String> {
        self.lock().web_identity_tokens.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn expiration(lifetime: Duration) -> String {
    let t = SystemTime::now() + lifetime;
    aws_smithy_types::DateTime::from(t).fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default()
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_credentials(lifetime: Duration) -> String {
    serde_json::json!({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": ACCESS_KEY_ID,
        "SecretAccessKey": SECRET_ACCESS_KEY, "Token": SESSION_TOKEN, "Expiration": expiration(lifetime)})
    .to_string()
}

async fn handle(config: &CloudConfig, state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let count =
        |name: &'static str| *state.lock().unwrap_or_else(|p| p.into_inner()).calls.entry(name).or_default() += 1;
    match (parts.method.clone(), parts.uri.path()) {
        (Method::POST, "/") => {
            count("sts");
            let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            let token = form.get("WebIdentityToken").cloned().unwrap_or_default();
            state.lock().unwrap_or_else(|p| p.into_inner()).web_identity_tokens.push(token.clone());
            let ok = form.get("Action").map(String::as_str) == Some("AssumeRoleWithWebIdentity")
                && form.contains_key("RoleArn")
                && form.contains_key("RoleSessionName")
                && config.web_identity_token.as_ref().is_none_or(|want| *want == token);
            if !ok {
                let xml = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                    <Code>InvalidIdentityToken</Code><Message>fake: the web identity token is not valid</Message></Error>\
                    <RequestId>fake</RequestId></ErrorResponse>";
                return reply(StatusCode::BAD_REQUEST, "text/xml", xml.into());
            }
            let xml = format!(
                "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{ACCESS_KEY_ID}</AccessKeyId>\
                 <SecretAccessKey>{SECRET_ACCESS_KEY}</SecretAccessKey><SessionToken>{SESSION_TOKEN}</SessionToken>\
                 <Expiration>{}</Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
                 <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
                expiration(config.lifetime)
            );
            reply(StatusCode::OK, "text/xml", xml)
        }
        (Method::GET, "/v1/credentials") => {
            count("container");
            if config.container_token.is_some() && header("authorization") != config.container_token {
                return reply(StatusCode::FORBIDDEN, "application/json", "{\"message\":\"bad token\"}".into());
            }
            reply(StatusCode::OK, "application/json", json_credentials(config.lifetime))
        }
        (Method::PUT, "/latest/api/token") => {
            count("imds-token");
            if header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return reply(StatusCode::BAD_REQUEST, "text/plain", String::new());
            }
            reply(StatusCode::OK, "text/plain", IMDS_TOKEN.into())
        }
        (Method::GET, path) if path.starts_with("/latest/meta-data/iam/security-credentials/") => {
            if header("x-aws-ec2-metadata-token").as_deref() != Some(IMDS_TOKEN) {
                return reply(StatusCode::UNAUTHORIZED, "text/plain", String::new());
            }
            match path.trim_start_matches("/latest/meta-data/iam/security-credentials/") {
                "" => {
                    count("imds-role");
                    reply(StatusCode::OK, "text/plain", ROLE.into())
                }
                r if r == ROLE => {
                    count("imds-credentials");
                    reply(StatusCode::OK, "application/json", json_credentials(config.lifetime))
                }
                _ => reply(StatusCode::NOT_FOUND, "text/plain", String::new()),
            }
        }
        (Method::POST, "/token") => {
            count("gcp-token");
            let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            let audience = format!("http://{}/token", header("host").unwrap_or_default());
            let verified = form.get("grant_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                && config.gcp_public_key.as_ref().is_some_and(|pem| {
                    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else { return false };
                    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                    v.set_audience(&[audience.as_str()]);
                    let assertion = form.get("assertion").map(String::as_str).unwrap_or_default();
                    jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v)
                        .is_ok_and(|t| t.claims["scope"] == "https://www.googleapis.com/auth/cloud-platform")
                });
            if !verified {
                let e = serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."});
                return reply(StatusCode::BAD_REQUEST, "application/json", e.to_string());
            }
            let t = serde_json::json!({"access_token": GCP_SA_TOKEN, "expires_in": config.lifetime.as_secs(), "token_type": "Bearer"});
            reply(StatusCode::OK, "application/json", t.to_string())
        }
        (Method::POST, "/v1/token") => {
            count("gcp-sts");
            let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            let ok = form.get("grant_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:grant-type:token-exchange")
                && form.get("audience").is_some_and(|a| a.starts_with("//iam.googleapis.com/"))
                && form.get("requested_token_type").map(String::as_str)
                    == Some("urn:ietf:params:oauth:token-type:access_token")
                && form.get("subject_token") == config.gcp_subject_token.as_ref();
            if !ok {
                let e =
                    serde_json::json!({"error": "invalid_grant", "error_description": "The subject token is invalid."});
                return reply(StatusCode::BAD_REQUEST, "application/json", e.to_string());
            }
            let t = serde_json::json!({"access_token": GCP_FEDERATED_TOKEN, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer", "expires_in": config.lifetime.as_secs()});
            reply(StatusCode::OK, "application/json", t.to_string())
        }
        (Method::POST, path) if path.ends_with(":generateAccessToken") => {
            count("gcp-impersonate");
            if header("authorization") != Some(format!("Bearer {GCP_FEDERATED_TOKEN}")) {
                return reply(StatusCode::UNAUTHORIZED, "application/json", "{}".into());
            }
            let t =
                serde_json::json!({"accessToken": GCP_IMPERSONATED_TOKEN, "expireTime": expiration(config.lifetime)});
            reply(StatusCode::OK, "application/json", t.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", String::new()),
    }
}
