//! SigV4 signing with aws-sigv4, set up the way Bedrock expects: service name `bedrock`,
//! double percent-encoding of the path (so an ARN's `%2F` is signed as `%252F`), the session
//! token signed, no `x-amz-content-sha256` header.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use std::time::SystemTime;

pub const SERVICE: &str = "bedrock";

/// Signs `req` in place: adds `x-amz-date`, `x-amz-security-token` (temporary credentials) and
/// `authorization`. Only `content-type` and `host` of the request's own headers are signed, as
/// the AWS SDKs do; everything else may change in transit without breaking the signature.
pub fn sign_request<B>(
    req: &mut http::Request<B>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let uri = req.uri().to_string();
    let signed: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter(|(k, _)| *k == http::header::CONTENT_TYPE)
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(req.method().as_str(), &uri, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| format!("SigV4 request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params).map_err(|e| format!("SigV4 signing: {e}"))?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

/// Parses a SigV4 `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(4..6)?, n(6..8)?, n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm), valid for the Gregorian calendar.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn matches_the_botocore_known_answer_vectors() {
        let text = include_str!("../../../../tests/fixtures/bedrock/sigv4_vector.json");
        let vectors: Value = serde_json::from_str(text).unwrap();
        let vectors = vectors["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 3);
        for v in vectors {
            let i = &v["inputs"];
            let s = |k: &str| i[k].as_str().unwrap().to_owned();
            let creds = Credentials::new(
                s("access_key_id"),
                s("secret_access_key"),
                i["session_token"].as_str().map(str::to_owned),
                None,
                "test",
            );
            let body = s("body");
            let mut req = http::Request::post(s("url")).header("content-type", "application/json").body(()).unwrap();
            let time = parse_amz_date(&s("x_amz_date")).unwrap();
            sign_request(&mut req, body.as_bytes(), &creds, &s("region"), time).unwrap();
            let want = &v["expected"]["headers_sent"];
            assert_eq!(req.headers()["authorization"], want["Authorization"].as_str().unwrap(), "{}", v["name"]);
            assert_eq!(req.headers()["x-amz-date"], want["X-Amz-Date"].as_str().unwrap());
            match want.get("X-Amz-Security-Token") {
                Some(t) => assert_eq!(req.headers()["x-amz-security-token"], t.as_str().unwrap()),
                None => assert!(req.headers().get("x-amz-security-token").is_none()),
            }
        }
    }

    #[test]
    fn amz_dates_parse() {
        let t = parse_amz_date("20250101T000000Z").unwrap();
        assert_eq!(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_735_689_600);
        assert!(parse_amz_date("2025-01-01").is_none());
    }
}
