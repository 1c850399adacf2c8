//! Every provider fixture goes through the code that handles its kind of message, and a fixture
//! this table does not know fails the test — so a fixture added later cannot go unexercised.

use super::{Protocol, Wire, anthropic, bedrock, gemini, openai, responses, stream_encoder};
use crate::canonical::Event;
use crate::upstream::failure::classify;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use std::path::Path;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A wire body: the fixture minus its `_`-prefixed reader notes.
fn body(path: &Path) -> Map<String, Value> {
    let Value::Object(mut m) = json(path) else { panic!("{} is not an object", path.display()) };
    m.retain(|k, _| !k.starts_with('_'));
    m
}

/// A canonical request must be sendable to every provider that can carry it.
fn encodes_everywhere(c: &crate::canonical::Request, what: &str) {
    let o = openai::encode_request(c, "m", openai::MaxTokensField::MaxCompletionTokens);
    assert!(openai::decode_request(&o).is_ok(), "{what} → OpenAI");
    assert!(!anthropic::encode_request(c, Some("m"))["messages"].as_array().unwrap().is_empty(), "{what} → Anthropic");
    assert!(bedrock::encode_converse(c).is_ok() || has_url_image(c), "{what} → Converse");
    assert!(gemini::encode_request(c).is_ok() || has_url_image(c), "{what} → Gemini");
}

fn has_url_image(c: &crate::canonical::Request) -> bool {
    c.messages
        .iter()
        .flat_map(|m| &m.content)
        .any(|p| matches!(p, crate::canonical::Part::Image(crate::canonical::Image::Url(_))))
}

/// A stream decodes to its end (or to its error) whatever the read sizes, and translates for
/// both client protocols.
fn stream_ends(wire: Wire, path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let mut events = Vec::new();
    let mut d = wire.stream_decoder("m", crate::protocol::DEFAULT_MAX_FRAME);
    for chunk in bytes.chunks(5) {
        d.feed(chunk, &mut events).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let last = events.last().unwrap_or_else(|| panic!("{}: no events", path.display()));
    assert!(matches!(last, Event::End | Event::Error { .. }), "{}: ends with {last:?}", path.display());
    for p in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Responses] {
        let mut e = stream_encoder(p, true);
        let mut out = BytesMut::new();
        for ev in &events {
            e.encode(ev, &mut out);
        }
        assert!(!out.is_empty());
    }
}

fn classifies(wire: Wire, path: &Path) {
    let v = json(path);
    let status = StatusCode::from_u16(v["status"].as_u64().unwrap() as u16).unwrap();
    let mut headers = HeaderMap::new();
    for (k, val) in v["headers"].as_object().into_iter().flatten() {
        headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), val.as_str().unwrap().parse().unwrap());
    }
    let f = classify(wire, status, &headers, Bytes::from(v["body"].to_string()));
    assert!(f.detail.contains(&status.as_u16().to_string()), "{}: {}", path.display(), f.detail);
}

fn headers_fixture(path: &Path) {
    let v = json(path);
    assert!(v["status"].is_u64() && v["headers"].is_object(), "{}", path.display());
}

#[test]
fn every_provider_fixture_is_exercised() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut seen = 0;
    for dir in ["openai", "responses", "anthropic", "bedrock", "vertex"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let n = name.as_str();
            match (dir, n) {
                (_, n) if n.ends_with(".headers.json") => headers_fixture(&path),
                ("openai", n) if n.starts_with("chat_request") => {
                    let b = body(&path);
                    crate::inbound::openai::parse(Value::Object(b.clone()).to_string().as_bytes()).unwrap();
                    encodes_everywhere(&openai::decode_request(&b).unwrap(), n);
                }
                ("openai", n) if n.starts_with("chat_response") => {
                    assert!(openai::decode_response(Value::Object(body(&path)).to_string().as_bytes()).is_some(), "{n}")
                }
                ("openai", n) if n.ends_with(".sse") => stream_ends(Wire::OpenAi, &path),
                ("responses", n) if n.starts_with("response_") => assert!(
                    responses::decode_response(Value::Object(body(&path)).to_string().as_bytes()).is_some(),
                    "{n}"
                ),
                ("responses", n) if n.ends_with(".sse") => stream_ends(Wire::OpenAiResponses, &path),
                ("openai", n) if n.starts_with("error_") => classifies(Wire::OpenAi, &path),
                ("anthropic", n) if n.starts_with("messages_request") => {
                    let b = body(&path);
                    crate::inbound::anthropic::parse(
                        Value::Object(b.clone()).to_string().as_bytes(),
                        &HeaderMap::new(),
                    )
                    .unwrap();
                    encodes_everywhere(&anthropic::decode_request(&b).unwrap(), n);
                }
                ("anthropic", n) if n.starts_with("messages_response") => {
                    assert!(
                        anthropic::decode_response(Value::Object(body(&path)).to_string().as_bytes()).is_some(),
                        "{n}"
                    )
                }
                ("anthropic", n) if n.ends_with(".sse") => stream_ends(Wire::Anthropic, &path),
                ("anthropic", n) if n.starts_with("error_") => classifies(Wire::Anthropic, &path),
                ("bedrock", "converse_request.json") => {
                    // The shape our Converse encoder targets: every top-level key it writes is here.
                    let b = body(&path);
                    assert!(
                        b["messages"].is_array() && b.contains_key("inferenceConfig") && b.contains_key("toolConfig")
                    );
                }
                ("bedrock", n) if n.starts_with("converse_response") => {
                    assert!(
                        bedrock::decode_response(Value::Object(body(&path)).to_string().as_bytes(), "m").is_some(),
                        "{n}"
                    )
                }
                ("bedrock", n) if n.starts_with("converse_stream") && n.ends_with(".bin") => {
                    stream_ends(Wire::BedrockConverse, &path)
                }
                ("bedrock", n) if n.ends_with("_events.json") => {
                    let bin = path.with_file_name(n.replace("_events.json", ".bin"));
                    let frames = json(&path).as_array().map_or(0, Vec::len);
                    assert!(bin.exists() && frames > 0, "{n} has a .bin twin");
                }
                ("bedrock", "invoke_anthropic_request.json") => {
                    let b = body(&path);
                    assert_eq!(b["anthropic_version"], bedrock::INVOKE_ANTHROPIC_VERSION);
                    assert!(!b.contains_key("model") && !b.contains_key("stream"));
                }
                ("bedrock", "invoke_anthropic_response.json") => {
                    assert!(anthropic::decode_response(Value::Object(body(&path)).to_string().as_bytes()).is_some())
                }
                ("bedrock", "invoke_stream_anthropic.bin") => stream_ends(Wire::BedrockInvoke, &path),
                ("bedrock", n) if n.starts_with("error_") => classifies(Wire::BedrockConverse, &path),
                ("bedrock", "sigv4_vector.json") => {
                    assert_eq!(json(&path)["vectors"].as_array().map(Vec::len), Some(3))
                }
                ("vertex", "generate_content_request.json") => assert!(body(&path)["contents"].is_array()),
                ("vertex", n) if n.starts_with("generate_content_response") => {
                    assert!(
                        gemini::decode_response(Value::Object(body(&path)).to_string().as_bytes(), "m").is_some(),
                        "{n}"
                    )
                }
                ("vertex", "stream_generate_content_no_sse.json") => {
                    let chunks = json(&path);
                    let chunks =
                        chunks.as_array().or_else(|| chunks["body"].as_array()).expect("an array of responses");
                    for c in chunks {
                        assert!(gemini::decode_response(c.to_string().as_bytes(), "m").is_some(), "{c}");
                    }
                }
                ("vertex", n) if n.starts_with("stream_generate_content") && n.ends_with(".sse") => {
                    stream_ends(Wire::VertexGemini, &path)
                }
                ("vertex", n) if n.starts_with("anthropic_") && n.ends_with("_request.json") => {
                    let b = body(&path);
                    assert_eq!(b["anthropic_version"], crate::protocol::anthropic::VERTEX_VERSION);
                    assert!(!b.contains_key("model"));
                }
                ("vertex", "anthropic_rawpredict_response.json") => {
                    assert!(anthropic::decode_response(Value::Object(body(&path)).to_string().as_bytes()).is_some())
                }
                ("vertex", "anthropic_streamrawpredict.sse") => stream_ends(Wire::VertexAnthropic, &path),
                ("vertex", n) if n.contains("error_") => classifies(Wire::VertexAnthropic, &path),
                (_, "README.md") => continue,
                (dir, n) => panic!("fixture {dir}/{n} is not exercised by any test: add it to this table"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 70, "only {seen} fixtures found");
}

/// Every provider's token count, as the sidecar reads it.
#[test]
fn token_count_replies_are_read_as_counts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/count_tokens");
    let cases = [
        ("anthropic_count_tokens_response.json", Wire::Anthropic, 2095),
        ("vertex_anthropic_count_tokens_response.json", Wire::VertexAnthropic, 14),
        ("bedrock_count_tokens_response.json", Wire::BedrockConverse, 2095),
        ("gemini_count_tokens_response.json", Wire::VertexGemini, 31),
        ("openai_input_tokens_response.json", Wire::OpenAiResponses, 11),
    ];
    for (name, wire, want) in cases {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(super::count_tokens::count(wire, &bytes), Some(want), "{name}");
    }
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(files, cases.len(), "every fixture in count_tokens/ is read here");
}

/// Every provider's embeddings reply becomes the caller's vectors, in order.
#[test]
fn embedding_replies_become_the_callers_vectors() {
    use super::embeddings::{Family, sizes, vectors};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/embeddings");
    let read = |name: &str| Bytes::from(std::fs::read(dir.join(name)).unwrap());
    let cases = [
        ("titan_v2_response.json", Family::Titan, 1, 6),
        ("cohere_embed_response.json", Family::Cohere, 2, 0),
        ("cohere_embed_floats_response.json", Family::Cohere, 2, 0),
        ("vertex_predict_response.json", Family::Vertex, 2, 6),
    ];
    for (name, family, n, tokens) in cases {
        let (v, t) = vectors(family, &[read(name)]).unwrap_or_else(|| panic!("{name}"));
        assert_eq!((v.len(), t), (n, tokens), "{name}");
        assert!(v.iter().all(|x| x.len() == 4), "{name}");
    }
    // OpenAI's own reply passes through; its vectors are measured, in floats or base64.
    assert_eq!(sizes(&read("openai_embeddings_response.json")), Some(vec![4, 4]));
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(files, cases.len() + 1, "every fixture in embeddings/ is read here");
}
