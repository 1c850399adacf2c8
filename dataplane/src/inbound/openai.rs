//! `POST /v1/chat/completions` requests.

use super::{Request, check_messages, json_object, model, stream};
use crate::error::ApiError;
use crate::protocol::Protocol;
use http::HeaderMap;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

pub fn parse(bytes: &[u8]) -> Result<Request, ApiError> {
    let body = json_object(bytes)?;
    let model = model(&body)?;
    check_messages(body.get("messages"), ROLES)?;
    let stream = stream(&body)?;
    if !stream && body.get("stream_options").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            Some("stream_options"),
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    Ok(Request {
        protocol: Protocol::OpenAi,
        model,
        stream,
        protocol_headers: HeaderMap::new(),
        body_len: bytes.len(),
        max_output: super::limit(&body, &["max_completion_tokens", "max_tokens"]),
        hands_back_tool_results: super::last(&body, "messages")
            .is_some_and(|m| m.get("role").and_then(|r| r.as_str()) == Some("tool")),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> ApiError {
        parse(body.as_bytes()).expect_err("should be rejected")
    }

    #[test]
    fn keeps_unknown_fields_and_reads_stream_flag() {
        let r = parse(
            br#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,"seed":7,"x_new":{"a":1}}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.model, "chat");
        assert_eq!(r.body["seed"], 7);
        assert_eq!(r.body["x_new"]["a"], 1);
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(err("{nope").code, "invalid_json");
        assert_eq!(err("[1]").code, "invalid_json");
        assert_eq!(err(r#"{"messages":[{"role":"user"}]}"#).param, Some("model"));
        let e = err(r#"{"model":"chat"}"#);
        assert_eq!((e.code, e.param), ("missing_messages", Some("messages")));
        assert_eq!(err(r#"{"model":"chat","messages":[]}"#).code, "empty_messages");
        let e = err(r#"{"model":"chat","messages":[{"role":"robot","content":"x"}]}"#);
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
        assert_eq!(err(r#"{"model":"chat","messages":[{"role":"user"}],"stream":"yes"}"#).param, Some("stream"));
        assert_eq!(
            err(r#"{"model":"chat","messages":[{"role":"user"}],"stream_options":{"include_usage":true}}"#).param,
            Some("stream_options")
        );
    }
}
