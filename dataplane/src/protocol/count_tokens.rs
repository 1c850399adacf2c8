//! Anthropic's token counting (`POST /v1/messages/count_tokens`) on every provider that counts:
//! Anthropic itself, Claude on Vertex AI (`count-tokens:rawPredict`, the model in the body),
//! Bedrock `CountTokens` (an InvokeModel body or a Converse request inside `input`), Gemini
//! `:countTokens`, and OpenAI's Responses `input_tokens`. Every answer reaches the caller as
//! Anthropic's `{"input_tokens": N}`.

use super::{Wire, anthropic, bedrock, gemini, responses};
use crate::canonical;
use base64::Engine;
use serde_json::{Map, Value, json};

/// The body to send `wire` for the caller's `body` (its canonical form `c`, present whenever the
/// endpoint is not Anthropic's own), or why this endpoint cannot count it.
pub fn request(
    wire: Wire,
    body: &Map<String, Value>,
    c: Option<&canonical::Request>,
    model: &str,
) -> Result<Map<String, Value>, String> {
    let canonical = || c.ok_or_else(|| "no canonical request to translate".to_owned());
    Ok(match wire {
        // The caller's own body; the model is set on sending.
        Wire::Anthropic => body.clone(),
        Wire::VertexAnthropic => {
            let mut out = body.clone();
            out.insert("model".into(), model.into());
            out.insert("anthropic_version".into(), anthropic::VERTEX_VERSION.into());
            out
        }
        Wire::BedrockInvoke => {
            let mut invoke = anthropic::encode_request(canonical()?, None);
            Wire::BedrockInvoke.place_anthropic_fields(&mut invoke, None);
            let bytes = serde_json::to_vec(&invoke).unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            json!({"input": {"invokeModel": {"body": encoded}}}).as_object().cloned().unwrap_or_default()
        }
        Wire::BedrockConverse => {
            let converse = bedrock::encode_converse(canonical()?)?;
            let keep = ["messages", "system", "toolConfig"];
            let inner: Map<String, Value> = converse.into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect();
            json!({"input": {"converse": inner}}).as_object().cloned().unwrap_or_default()
        }
        Wire::VertexGemini => {
            let keep = ["contents", "systemInstruction", "tools"];
            gemini::encode_request(canonical()?)?.into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect()
        }
        Wire::OpenAi | Wire::OpenAiResponses => {
            let keep = ["input", "instructions", "tools", "tool_choice", "text", "reasoning", "parallel_tool_calls"];
            responses::encode_request(canonical()?, model)
                .into_iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .collect()
        }
    })
}

/// The provider's count, from its reply; `None` if the reply is not one.
pub fn count(wire: Wire, reply: &[u8]) -> Option<u64> {
    let v: Value = serde_json::from_slice(reply).ok()?;
    let field = match wire {
        Wire::Anthropic | Wire::VertexAnthropic | Wire::OpenAi | Wire::OpenAiResponses => "input_tokens",
        Wire::BedrockConverse | Wire::BedrockInvoke => "inputTokens",
        Wire::VertexGemini => "totalTokens",
    };
    v.get(field)?.as_u64()
}

/// Anthropic's reply.
pub fn reply(input_tokens: u64) -> Value {
    json!({"input_tokens": input_tokens})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Map<String, Value> {
        json!({"model": "claude-fake", "system": "Be brief.",
               "messages": [{"role": "user", "content": "How many tokens is this?"}],
               "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]})
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn each_provider_gets_its_own_counting_request() {
        let b = body();
        let c = anthropic::decode_request(&b).unwrap();
        let vertex = request(Wire::VertexAnthropic, &b, Some(&c), "claude-sonnet-4@20250514").unwrap();
        assert_eq!(
            (vertex["model"].as_str(), vertex["anthropic_version"].as_str()),
            (Some("claude-sonnet-4@20250514"), Some("vertex-2023-10-16"))
        );
        let invoke = request(Wire::BedrockInvoke, &b, Some(&c), "m").unwrap();
        let inner = invoke["input"]["invokeModel"]["body"].as_str().unwrap();
        let inner: Value =
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(inner).unwrap()).unwrap();
        assert_eq!(inner["anthropic_version"], "bedrock-2023-05-31");
        assert!(inner.get("model").is_none() && inner["max_tokens"].as_u64().is_some());
        let converse = request(Wire::BedrockConverse, &b, Some(&c), "m").unwrap();
        assert!(
            converse["input"]["converse"]["messages"].is_array() && converse["input"]["converse"]["system"].is_array()
        );
        assert!(converse["input"]["converse"].get("inferenceConfig").is_none());
        let gemini = request(Wire::VertexGemini, &b, Some(&c), "m").unwrap();
        assert!(gemini.contains_key("contents") && !gemini.contains_key("generationConfig"));
        let openai = request(Wire::OpenAi, &b, Some(&c), "m").unwrap();
        assert_eq!(openai["instructions"], "Be brief.");
        assert!(!openai.contains_key("store") && !openai.contains_key("max_output_tokens"));
    }

    #[test]
    fn counts_are_read_from_each_providers_reply() {
        assert_eq!(count(Wire::Anthropic, br#"{"input_tokens":14}"#), Some(14));
        assert_eq!(count(Wire::BedrockConverse, br#"{"inputTokens":15}"#), Some(15));
        assert_eq!(count(Wire::VertexGemini, br#"{"totalTokens":16,"totalBillableCharacters":40}"#), Some(16));
        assert_eq!(count(Wire::OpenAi, br#"{"object":"response.input_tokens","input_tokens":17}"#), Some(17));
        assert_eq!(count(Wire::Anthropic, b"<html>"), None);
    }
}
