//! The fake's token counters and embedding models, in each provider's shape: Anthropic's
//! `count_tokens`, OpenAI's Responses `input_tokens`, Bedrock `CountTokens`, Gemini
//! `:countTokens`, Claude on Vertex `count-tokens:rawPredict`; OpenAI `/embeddings`, Titan and
//! Cohere on Bedrock InvokeModel, Vertex `:predict`.
//!
//! A count is the number of words in the request's texts, wherever the provider's format puts
//! them, so a count that survives translation equals the native one. A vector's first number is
//! the length of the text it embeds (so tests can tell vectors apart and in order); its size is
//! what the request asks for, else 8.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

/// What a request on `path` is, for the operations answered here.
pub enum Op {
    CountAnthropic,
    /// Claude on Vertex: the model named in the body, Vertex's `anthropic_version`.
    CountVertexClaude,
    CountOpenAi,
    CountBedrock,
    CountGemini,
    EmbedOpenAi,
    EmbedBedrock {
        model: String,
    },
    EmbedVertex,
}

pub fn route(path: &str, bedrock: Option<&(String, &str)>, google: Option<(&str, &str, &str)>) -> Option<Op> {
    Some(match (path, bedrock, google) {
        ("/v1/messages/count_tokens", _, _) => Op::CountAnthropic,
        ("/v1/responses/input_tokens" | "/responses/input_tokens" | "/openai/v1/responses/input_tokens", _, _) => {
            Op::CountOpenAi
        }
        ("/v1/embeddings" | "/embeddings", _, _) => Op::EmbedOpenAi,
        (p, _, _) if p.starts_with("/openai/deployments/") && p.ends_with("/embeddings") => Op::EmbedOpenAi,
        (_, Some((_, "count-tokens")), _) => Op::CountBedrock,
        (_, Some((model, "invoke")), _) if model.contains("embed") => Op::EmbedBedrock { model: model.clone() },
        (_, _, Some((_, _, "countTokens"))) => Op::CountGemini,
        (_, _, Some(("anthropic", "count-tokens", "rawPredict"))) => Op::CountVertexClaude,
        (_, _, Some((_, _, "predict"))) => Op::EmbedVertex,
        _ => return None,
    })
}

/// The reply, or the status of a request the provider would refuse.
pub fn answer(op: &Op, body: &[u8]) -> Result<Bytes, u16> {
    let v: Value = serde_json::from_slice(body).map_err(|_| 400u16)?;
    let reply = match op {
        Op::CountAnthropic if v.get("messages").is_some_and(Value::is_array) => json!({"input_tokens": words(&v)}),
        Op::CountVertexClaude
            if v.get("messages").is_some_and(Value::is_array)
                && v.get("model").is_some_and(Value::is_string)
                && v.get("anthropic_version").and_then(Value::as_str) == Some("vertex-2023-10-16") =>
        {
            json!({"input_tokens": words(&v)})
        }
        Op::CountOpenAi if v.get("input").is_some() && v.get("model").is_some() => {
            json!({"object": "response.input_tokens", "input_tokens": words(&v)})
        }
        Op::CountBedrock => {
            let input = v.get("input").ok_or(400u16)?;
            let counted = match (input.pointer("/invokeModel/body"), input.get("converse")) {
                (Some(Value::String(b)), None) => {
                    let raw = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| 400u16)?;
                    let inner: Value = serde_json::from_slice(&raw).map_err(|_| 400u16)?;
                    if inner.get("anthropic_version").is_none() || inner.get("model").is_some() {
                        return Err(400);
                    }
                    words(&inner)
                }
                (None, Some(c)) if c.get("messages").is_some_and(Value::is_array) => words(c),
                _ => return Err(400),
            };
            json!({"inputTokens": counted})
        }
        Op::CountGemini if v.get("contents").is_some_and(Value::is_array) && v.get("generationConfig").is_none() => {
            json!({"totalTokens": words(&v), "totalBillableCharacters": 0})
        }
        Op::EmbedOpenAi => {
            let texts: Vec<String> = match v.get("input") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => {
                    a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect()
                }
                _ => return Err(400),
            };
            let size = v.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
            let base64 = v.get("encoding_format").and_then(Value::as_str) == Some("base64");
            let data: Vec<Value> = texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let vec = vector(t, size);
                    let embedding = if base64 {
                        let bytes: Vec<u8> = vec.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        json!(vec)
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            let tokens: u64 = texts.iter().map(|t| t.split_whitespace().count() as u64).sum();
            json!({"object": "list", "data": data, "model": v.get("model").cloned().unwrap_or(json!("deployment")),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        }
        Op::EmbedBedrock { model } if model.contains("titan") => {
            let text = v.get("inputText").and_then(Value::as_str).ok_or(400u16)?;
            let size = v.get("dimensions").and_then(Value::as_u64).unwrap_or(8) as usize;
            json!({"embedding": vector(text, size), "inputTextTokenCount": text.split_whitespace().count(),
                   "embeddingsByType": {"float": vector(text, size)}})
        }
        Op::EmbedBedrock { .. } => {
            let texts = v.get("texts").and_then(Value::as_array).ok_or(400u16)?;
            let vectors: Vec<Vec<f64>> = texts.iter().map(|t| vector(t.as_str().unwrap_or_default(), 8)).collect();
            json!({"id": "fake-cohere", "embeddings": {"float": vectors}, "response_type": "embeddings_by_type", "texts": texts})
        }
        Op::EmbedVertex => {
            let instances = v.get("instances").and_then(Value::as_array).ok_or(400u16)?;
            let size = v.pointer("/parameters/outputDimensionality").and_then(Value::as_u64).unwrap_or(8) as usize;
            let predictions: Vec<Value> = instances
                .iter()
                .map(|i| {
                    let t = i.get("content").and_then(Value::as_str).unwrap_or_default();
                    json!({"embeddings": {"values": vector(t, size),
                           "statistics": {"token_count": t.split_whitespace().count(), "truncated": false}}})
                })
                .collect();
            json!({"predictions": predictions, "metadata": {"billableCharacterCount": 0}})
        }
        _ => return Err(400),
    };
    Ok(Bytes::from(reply.to_string()))
}

fn vector(text: &str, size: usize) -> Vec<f64> {
    (0..size).map(|i| if i == 0 { text.len() as f64 } else { i as f64 / 8.0 }).collect()
}

/// Words in the request's texts: string values of the keys that hold text in some provider's
/// format, however deep.
fn words(v: &Value) -> u64 {
    const TEXT: &[&str] = &["text", "content", "system", "instructions", "input", "description"];
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| match x {
                Value::String(s) if TEXT.contains(&k.as_str()) => s.split_whitespace().count() as u64,
                other => words(other),
            })
            .sum(),
        Value::Array(a) => a.iter().map(words).sum(),
        _ => 0,
    }
}
