//! `POST /v1/responses` requests.
//!
//! Only what routing needs is checked (the feature, the stream flag, an input to send): item
//! and tool types this sidecar does not know are left for the endpoint to judge, so new ones
//! work on endpoints that speak the Responses API without a release.

use super::{Request, json_object, model, stream};
use crate::error::ApiError;
use crate::protocol::Protocol;
use http::HeaderMap;
use serde_json::Value;

pub fn parse(bytes: &[u8]) -> Result<Request, ApiError> {
    let body = json_object(bytes)?;
    let model = model(&body)?;
    let stream = stream(&body)?;
    match body.get("input") {
        Some(Value::String(_) | Value::Array(_)) => {}
        // A stored prompt or an earlier response can stand in for the input.
        None | Some(Value::Null) if body.contains_key("prompt") || body.contains_key("previous_response_id") => {}
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_request("missing_input", Some("input"), "`input` is required"));
        }
        Some(_) => {
            return Err(ApiError::invalid_request(
                "invalid_type",
                Some("input"),
                "`input` must be a string or an array of input items",
            ));
        }
    }
    if let Some(Value::Array(items)) = body.get("input")
        && let Some(i) = items.iter().position(|item| !item.is_object())
    {
        return Err(ApiError::invalid_request("invalid_type", Some("input"), format!("input[{i}] must be an object")));
    }
    Ok(Request {
        protocol: Protocol::Responses,
        model,
        stream,
        protocol_headers: HeaderMap::new(),
        body_len: bytes.len(),
        max_output: super::limit(&body, &["max_output_tokens"]),
        hands_back_tool_results: super::last(&body, "input")
            .is_some_and(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output")),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_items_and_fields_pass_the_inbound_check() {
        let r = parse(
            br#"{"model":"agent","input":[{"type":"web_search_call","id":"ws_1"},{"role":"user","content":"hi"}],"stream":true,"tools":[{"type":"web_search"}],"x_new":1}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!((r.protocol, r.model.as_str()), (Protocol::Responses, "agent"));
        assert_eq!(r.body["x_new"], 1);
        assert!(parse(br#"{"model":"agent","input":"hello"}"#).is_ok());
        assert!(parse(br#"{"model":"agent","previous_response_id":"resp_1"}"#).is_ok());
    }

    #[test]
    fn rejections_name_the_field() {
        let e = parse(br#"{"model":"agent"}"#).unwrap_err();
        assert_eq!((e.code, e.param), ("missing_input", Some("input")));
        let e = parse(br#"{"model":"agent","input":7}"#).unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_type", Some("input")));
        let e = parse(br#"{"model":"agent","input":["hi"]}"#).unwrap_err();
        assert!(e.message.contains("input[0]"), "{}", e.message);
        assert_eq!(parse(br#"{"input":"hi"}"#).unwrap_err().param, Some("model"));
        assert_eq!(parse(br#"{"model":"agent","input":"hi","stream":"yes"}"#).unwrap_err().param, Some("stream"));
    }
}
