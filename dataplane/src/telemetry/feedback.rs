//! User feedback: `POST /v1/feedback {request_id, score}` rates a request this sidecar served.
//! The sidecar remembers which feature and endpoint served its recent requests, sums the scores
//! per (feature, endpoint) and sends the sums with its next telemetry report; the control plane
//! turns them into trends (docs/design.md §7).

use crate::AppState;
use crate::body::ProxyBody;
use crate::error::ApiError;
use crate::protocol::Protocol;
use http::{Request, Response, StatusCode};
use spillway_api::v1::FeedbackSummary;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many recent requests can be rated. Feedback usually comes within seconds of the answer;
/// a busy sidecar forgets the oldest first.
pub const REMEMBERED: usize = 10_000;

type Served = (Arc<str>, Arc<str>);

#[derive(Default)]
struct Recent {
    by_id: HashMap<String, Served>,
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct Feedback {
    recent: Mutex<Recent>,
    /// (feature, endpoint) → (count, sum of scores) since the last report.
    pending: Mutex<HashMap<Served, (u64, f64)>>,
}

#[derive(Debug, PartialEq)]
pub enum Rejected {
    /// Not served here, too old, or already rated.
    UnknownRequest,
}

impl Feedback {
    /// A request was answered by `endpoint` for `feature`: it may now be rated.
    pub fn served(&self, request_id: &str, feature: &Arc<str>, endpoint: &Arc<str>) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.order.len() >= REMEMBERED
            && let Some(old) = r.order.pop_front()
        {
            r.by_id.remove(&old);
        }
        r.order.push_back(request_id.to_owned());
        r.by_id.insert(request_id.to_owned(), (feature.clone(), endpoint.clone()));
    }

    /// Rates a served request once; `score` is in [0, 1] (checked by the caller).
    pub fn submit(&self, request_id: &str, score: f64) -> Result<Served, Rejected> {
        let served = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .remove(request_id)
            .ok_or(Rejected::UnknownRequest)?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let e = pending.entry(served.clone()).or_default();
        e.0 += 1;
        e.1 += score;
        Ok(served)
    }

    /// The sums since the last report.
    pub fn take(&self) -> Vec<FeedbackSummary> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        pending
            .into_iter()
            .map(|((feature, endpoint), (count, score_sum))| FeedbackSummary {
                feature: feature.to_string(),
                endpoint: endpoint.to_string(),
                count,
                score_sum,
            })
            .collect()
    }
}

/// `POST /v1/feedback {"request_id": "...", "score": 0..1}` → 202, or an OpenAI-format error
/// naming what was wrong.
pub async fn serve(state: &AppState, req: Request<hyper::body::Incoming>) -> Response<ProxyBody> {
    let Some(feedback) = &state.feedback else {
        return ApiError::invalid_request(
            "feedback_unavailable",
            None,
            "feedback goes to the control plane, and this sidecar runs standalone (no --control-plane)",
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .into_response(Protocol::OpenAi);
    };
    let (parts, body) = req.into_parts();
    let bytes = match crate::inbound::read_body(&parts.headers, body, 64 * 1024, state.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(Protocol::OpenAi),
    };
    let (request_id, score) = match parse(&bytes) {
        Ok(v) => v,
        Err(e) => return e.into_response(Protocol::OpenAi),
    };
    match feedback.submit(&request_id, score) {
        Ok((feature, endpoint)) => {
            tracing::debug!(request_id, %feature, %endpoint, score, "feedback received");
            let body = serde_json::json!({"accepted": true, "request_id": request_id, "feature": &*feature,
                "endpoint": &*endpoint});
            crate::body::text(StatusCode::ACCEPTED, "application/json", body.to_string())
        }
        Err(Rejected::UnknownRequest) => ApiError::not_found(
            "unknown_request_id",
            format!(
                "request_id {request_id:?} is not one of the last {REMEMBERED} requests this sidecar answered, \
                 or was already rated"
            ),
        )
        .into_response(Protocol::OpenAi),
    }
}

fn parse(bytes: &[u8]) -> Result<(String, f64), ApiError> {
    let bad = |param, msg: String| ApiError::invalid_request("invalid_feedback", Some(param), msg);
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad("body", format!("the body is not JSON: {e}")))?;
    let id = match v.get("request_id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(bad("request_id", "request_id must be a non-empty string (x-spillway-request-id)".into()));
        }
        None => {
            return Err(bad("request_id", "request_id is required (the x-spillway-request-id of the answer)".into()));
        }
    };
    let score = match v.get("score").map(|s| s.as_f64()) {
        Some(Some(s)) if (0.0..=1.0).contains(&s) => s,
        Some(_) => return Err(bad("score", "score must be a number from 0 (bad) to 1 (good)".into())),
        None => return Err(bad("score", "score is required: a number from 0 (bad) to 1 (good)".into())),
    };
    Ok((id, score))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_request_is_rated_once_and_the_oldest_are_forgotten() {
        let f = Feedback::default();
        let (feat, ep): (Arc<str>, Arc<str>) = ("search".into(), "sonnet".into());
        for i in 0..=REMEMBERED {
            f.served(&format!("r{i}"), &feat, &ep);
        }
        assert_eq!(f.submit("r0", 1.0), Err(Rejected::UnknownRequest), "the oldest was forgotten");
        assert_eq!(f.submit("r1", 1.0).unwrap(), (feat.clone(), ep.clone()));
        assert_eq!(f.submit("r1", 0.0), Err(Rejected::UnknownRequest), "rated once");
        f.submit("r2", 0.5).unwrap();
        let sums = f.take();
        assert_eq!(sums.len(), 1);
        assert_eq!((sums[0].count, sums[0].score_sum), (2, 1.5));
        assert!(f.take().is_empty(), "taken once");
    }

    #[test]
    fn bad_feedback_names_the_field() {
        assert_eq!(parse(br#"{"request_id":"r1","score":0.5}"#).unwrap(), ("r1".into(), 0.5));
        for (body, param) in [
            (&br#"{"score":1}"#[..], "request_id"),
            (br#"{"request_id":7,"score":1}"#, "request_id"),
            (br#"{"request_id":"r"}"#, "score"),
            (br#"{"request_id":"r","score":1.5}"#, "score"),
            (br#"{"request_id":"r","score":"good"}"#, "score"),
            (b"nope", "body"),
        ] {
            assert_eq!(parse(body).unwrap_err().param, Some(param), "{}", String::from_utf8_lossy(body));
        }
    }
}
