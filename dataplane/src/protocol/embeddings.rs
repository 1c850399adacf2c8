//! OpenAI embeddings (`POST /v1/embeddings`) on every provider that embeds: OpenAI, Azure and
//! compatible servers (the caller's body passed through), Bedrock InvokeModel with Titan Text
//! Embeddings v2 (one text per call) or Cohere Embed (a batch per call), and Vertex AI text
//! embedding models (`:predict`). Translated replies reach the caller in OpenAI's shape, as
//! floats or, when asked (the `openai` SDK asks by default), base64 of little-endian `f32`s.

use super::Wire;
use base64::Engine;
use serde_json::{Map, Value, json};

/// A provider's embedding API, told apart by wire and, on Bedrock, by model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/embeddings`: the caller's own API.
    OpenAi,
    /// Amazon Titan Text Embeddings (`inputText`, one text per call).
    Titan,
    /// Cohere Embed on Bedrock (`texts`, a batch per call).
    Cohere,
    /// Vertex AI text embedding models (`instances[].content`).
    Vertex,
}

impl Family {
    /// The API of an endpoint speaking `wire` and serving `model`, or why it has none.
    pub fn of(wire: Wire, model: &str) -> Result<Family, String> {
        match wire {
            Wire::OpenAi | Wire::OpenAiResponses => Ok(Family::OpenAi),
            Wire::BedrockConverse | Wire::BedrockInvoke if model.contains("titan-embed") => Ok(Family::Titan),
            Wire::BedrockConverse | Wire::BedrockInvoke if model.contains("cohere.embed") => Ok(Family::Cohere),
            Wire::BedrockConverse | Wire::BedrockInvoke => {
                Err(format!("Bedrock model `{model}` is neither a Titan nor a Cohere embedding model"))
            }
            Wire::VertexGemini => Ok(Family::Vertex),
            Wire::Anthropic | Wire::VertexAnthropic => Err("Anthropic models have no embeddings".into()),
        }
    }
}

/// A checked embeddings request: what a translation needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The texts, in order; `None` when the caller sent token ids, which only OpenAI reads.
    pub texts: Option<Vec<String>>,
    pub dimensions: Option<u64>,
    pub base64: bool,
}

/// The most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Reads the caller's body; a bad `input` is the caller's to fix, named in the message.
pub fn decode(body: &Map<String, Value>) -> Result<Request, (&'static str, String)> {
    let texts = match body.get("input") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => return Err(("input", "`input` must not be empty".into())),
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
            return Err(("input", format!("`input` has {} items; at most {MAX_INPUTS} are allowed", items.len())));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Some(Value::Array(items)) if items.iter().all(|i| i.is_u64() || i.is_array()) => None,
        Some(_) => {
            return Err((
                "input",
                "`input` must be a string, an array of strings, or token ids (an array of integers, or of arrays of them)"
                    .into(),
            ));
        }
        None => return Err(("input", "`input` is required".into())),
    };
    if texts.as_ref().is_some_and(|t| t.iter().any(String::is_empty)) {
        return Err(("input", "`input` must not contain empty strings".into()));
    }
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|d| *d > 0) {
            Some(d) => Some(d),
            None => return Err(("dimensions", format!("`dimensions` must be a positive integer, got {v}"))),
        },
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(("encoding_format", format!("`encoding_format` is `{other}`; expected float or base64")));
        }
    };
    Ok(Request { texts, dimensions, base64 })
}

/// The bodies to send for `req` (Titan takes one text per call), or why this endpoint cannot.
pub fn requests(family: Family, req: &Request) -> Result<Vec<Map<String, Value>>, String> {
    let texts = match (family, &req.texts) {
        (Family::OpenAi, _) => return Err("OpenAI-family bodies are passed through".into()),
        (_, None) => return Err("token ids can be embedded by OpenAI endpoints only".into()),
        (_, Some(t)) => t,
    };
    let object = |v: Value| v.as_object().cloned().unwrap_or_default();
    Ok(match family {
        Family::Titan => texts
            .iter()
            .map(|t| {
                let mut b = object(json!({"inputText": t, "normalize": true}));
                if let Some(d) = req.dimensions {
                    b.insert("dimensions".into(), d.into());
                }
                b
            })
            .collect(),
        Family::Cohere => {
            if req.dimensions.is_some() {
                return Err("Cohere Embed on Bedrock returns vectors of its model's one size".into());
            }
            vec![object(json!({"texts": texts, "input_type": "search_document", "embedding_types": ["float"]}))]
        }
        Family::Vertex => {
            let instances: Vec<Value> = texts.iter().map(|t| json!({"content": t})).collect();
            let mut b = object(json!({"instances": instances}));
            if let Some(d) = req.dimensions {
                b.insert("parameters".into(), json!({"outputDimensionality": d}));
            }
            vec![b]
        }
        // Refused above: the caller's body goes as it is.
        Family::OpenAi => Vec::new(),
    })
}

/// Vectors and the input tokens they cost, from each reply of `requests` in order; `None` if a
/// reply is not one of `family`.
pub fn vectors(family: Family, replies: &[bytes::Bytes]) -> Option<(Vec<Vec<f64>>, u64)> {
    let floats = |v: &Value| -> Option<Vec<f64>> { v.as_array()?.iter().map(Value::as_f64).collect() };
    let mut out = Vec::new();
    let mut tokens = 0;
    for reply in replies {
        let v: Value = serde_json::from_slice(reply).ok()?;
        match family {
            Family::Titan => {
                out.push(floats(v.get("embedding")?)?);
                tokens += v.get("inputTextTokenCount").and_then(Value::as_u64).unwrap_or(0);
            }
            Family::Cohere => {
                // `embeddings` is a list of vectors, or (with `embedding_types`) by type.
                let e = v.get("embeddings")?;
                let list = e.get("float").unwrap_or(e);
                for vector in list.as_array()? {
                    out.push(floats(vector)?);
                }
            }
            Family::Vertex => {
                for p in v.get("predictions")?.as_array()? {
                    out.push(floats(p.pointer("/embeddings/values")?)?);
                    tokens +=
                        p.pointer("/embeddings/statistics/token_count").and_then(Value::as_f64).unwrap_or(0.0) as u64;
                }
            }
            Family::OpenAi => return None,
        }
    }
    Some((out, tokens))
}

/// OpenAI's reply for `vectors`.
pub fn reply(vectors: &[Vec<f64>], model: &str, tokens: u64, base64: bool) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// The length of every vector of an OpenAI-shaped reply (floats or base64), for the check that
/// an endpoint's vectors are the size it declares; `None` if the reply is not one.
pub fn sizes(reply: &[u8]) -> Option<Vec<usize>> {
    let v: Value = serde_json::from_slice(reply).ok()?;
    v.get("data")?
        .as_array()?
        .iter()
        .map(|d| match d.get("embedding")? {
            Value::Array(a) => Some(a.len()),
            Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).ok().map(|b| b.len() / 4),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn inputs_are_checked_and_named() {
        let r = decode(&body(json!({"input": ["a", "b"], "dimensions": 256, "encoding_format": "base64"}))).unwrap();
        assert_eq!(r, Request { texts: Some(vec!["a".into(), "b".into()]), dimensions: Some(256), base64: true });
        assert_eq!(decode(&body(json!({"input": [[1, 2], [3]]}))).unwrap().texts, None);
        for bad in
            [json!({}), json!({"input": []}), json!({"input": [""]}), json!({"input": 7}), json!({"input": ["a", 1]})]
        {
            assert_eq!(decode(&body(bad.clone())).unwrap_err().0, "input", "{bad}");
        }
        assert_eq!(decode(&body(json!({"input": "a", "dimensions": 0}))).unwrap_err().0, "dimensions");
        assert_eq!(decode(&body(json!({"input": "a", "encoding_format": "hex"}))).unwrap_err().0, "encoding_format");
    }

    #[test]
    fn titan_takes_one_text_per_call_and_cohere_and_vertex_a_batch() {
        let r = Request { texts: Some(vec!["a".into(), "b".into()]), dimensions: Some(512), base64: false };
        let titan = requests(Family::Titan, &r).unwrap();
        assert_eq!(titan.len(), 2);
        assert_eq!(titan[1], body(json!({"inputText": "b", "normalize": true, "dimensions": 512})));
        let vertex = requests(Family::Vertex, &r).unwrap();
        assert_eq!(vertex[0]["instances"], json!([{"content": "a"}, {"content": "b"}]));
        assert_eq!(vertex[0]["parameters"]["outputDimensionality"], 512);
        assert!(requests(Family::Cohere, &r).is_err(), "Cohere's size is fixed");
        let tokens = Request { texts: None, dimensions: None, base64: false };
        assert!(requests(Family::Titan, &tokens).is_err());
    }

    #[test]
    fn replies_become_openai_vectors_in_floats_or_base64() {
        let titan = [bytes::Bytes::from_static(br#"{"embedding":[0.5,-1.0],"inputTextTokenCount":3}"#)];
        let (v, tokens) = vectors(Family::Titan, &titan).unwrap();
        assert_eq!((v.clone(), tokens), (vec![vec![0.5, -1.0]], 3));
        let cohere = [bytes::Bytes::from_static(
            br#"{"id":"x","embeddings":{"float":[[1.0],[2.0]]},"response_type":"embeddings_by_type"}"#,
        )];
        assert_eq!(vectors(Family::Cohere, &cohere).unwrap().0, vec![vec![1.0], vec![2.0]]);
        let vertex = [bytes::Bytes::from_static(
            br#"{"predictions":[{"embeddings":{"values":[0.25],"statistics":{"token_count":4,"truncated":false}}}]}"#,
        )];
        assert_eq!(vectors(Family::Vertex, &vertex).unwrap(), (vec![vec![0.25]], 4));
        let floats = reply(&v, "titan", 3, false);
        assert_eq!(floats["data"][0]["embedding"], json!([0.5, -1.0]));
        let b64 = reply(&v, "titan", 3, true);
        let raw =
            base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
        assert_eq!(raw, [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat());
        assert_eq!(sizes(b64.to_string().as_bytes()), Some(vec![2]));
        assert_eq!(b64["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    }
}
