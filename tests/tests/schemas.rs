//! Every request spillway translates, checked against the providers' own published schemas rather
//! than against spillway's fakes: each client request of the corpus (`fixtures/requests/` and the
//! provider fixtures' request bodies) is decoded as the sidecar decodes it and encoded for every
//! provider wire it would be translated to; `python/validate_requests.py` then runs the bodies
//! through botocore's `bedrock-runtime` model and parameter validator, the google-genai SDK's types,
//! and the anthropic and openai SDKs' request types, all made to refuse unknown fields.

use serde_json::{Map, Value};
use spillway_dataplane::protocol::openai::MaxTokensField;
use spillway_dataplane::protocol::{Protocol, Wire, anthropic, count_tokens, openai, responses};
use std::path::{Path, PathBuf};
use std::process::Command;

const WIRES: [(Wire, &str); 7] = [
    (Wire::OpenAi, "openai"),
    (Wire::OpenAiResponses, "responses"),
    (Wire::Anthropic, "anthropic"),
    (Wire::BedrockConverse, "converse"),
    (Wire::BedrockInvoke, "bedrock_invoke"),
    (Wire::VertexGemini, "gemini"),
    (Wire::VertexAnthropic, "vertex_anthropic"),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("SPILLWAY_VENV").map_or_else(|| root.join("target/sdk-venv"), PathBuf::from);
    let p = venv.join("bin/python");
    assert!(p.exists(), "{} is missing: run `bash tests/python/setup.sh` (the README test command does)", p.display());
    p
}

/// A request body as an app sends it: the fixture minus its `_`-prefixed reader notes.
fn body(path: &Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let Value::Object(mut m) = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())) else {
        panic!("{} is not an object", path.display())
    };
    m.retain(|k, _| !k.starts_with('_'));
    m
}

/// (name, client protocol, body) of every client request in the corpus.
fn corpus() -> Vec<(String, Protocol, Map<String, Value>)> {
    let mut out = Vec::new();
    let mut add = |dir: &str, prefix: &str, protocol: Protocol| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".json")
            })
            .collect();
        files.sort();
        for f in files {
            let name = format!("{dir}_{}", f.file_stem().unwrap().to_string_lossy());
            out.push((name, protocol, body(&f)));
        }
    };
    add("requests", "openai_", Protocol::OpenAi);
    add("requests", "anthropic_", Protocol::Anthropic);
    add("requests", "responses_", Protocol::Responses);
    add("openai", "chat_request", Protocol::OpenAi);
    add("anthropic", "messages_request", Protocol::Anthropic);
    assert!(out.len() >= 8, "the corpus is missing: {out:?}");
    out
}

/// Writes every translated body into `dir`; returns how many.
fn translate_corpus(dir: &Path) -> usize {
    let mut written = 0;
    for (name, protocol, body) in corpus() {
        let canonical = match protocol {
            Protocol::OpenAi => openai::decode_request(&body),
            Protocol::Anthropic => anthropic::decode_request(&body),
            Protocol::Responses => responses::decode_request(&body),
        }
        .unwrap_or_else(|e| panic!("{name} does not decode: {e:?}"));
        for (wire, target) in WIRES {
            if wire.passes_through(protocol) {
                // Passed through as sent: the corpus body itself must be a valid request.
                if protocol == Protocol::Responses {
                    let file = dir.join(format!("{name}--{target}.json"));
                    std::fs::write(file, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
                    written += 1;
                }
                continue;
            }
            match wire.encode_request(&canonical, "model-from-config", MaxTokensField::MaxCompletionTokens) {
                Ok(encoded) => {
                    let file = dir.join(format!("{name}--{target}.json"));
                    std::fs::write(file, serde_json::to_vec_pretty(&encoded).unwrap()).unwrap();
                    written += 1;
                }
                // Refused before sending, with the reason: a body the wire cannot carry.
                Err(e) => assert!(!e.is_empty(), "{name} → {target}: refused without a reason"),
            }
        }
    }
    written
}

/// Token counting: each Anthropic request of the corpus as a `count_tokens` body (the Messages
/// body without what only generation takes), encoded for every provider's counter. Returns how
/// many bodies were written.
fn count_corpus(dir: &Path) -> usize {
    const GENERATION_ONLY: &[&str] =
        &["max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata", "service_tier"];
    let mut written = 0;
    for (name, protocol, mut body) in corpus() {
        if protocol != Protocol::Anthropic {
            continue;
        }
        body.retain(|k, _| !GENERATION_ONLY.contains(&k.as_str()));
        let canonical = anthropic::decode_request(&body).ok();
        for (wire, target) in [
            (Wire::Anthropic, "count_anthropic"),
            (Wire::VertexAnthropic, "count_vertex_anthropic"),
            (Wire::BedrockConverse, "count_bedrock"),
            (Wire::BedrockInvoke, "count_bedrock"),
            (Wire::VertexGemini, "count_gemini"),
            (Wire::OpenAiResponses, "count_openai"),
        ] {
            let Ok(mut encoded) = count_tokens::request(wire, &body, canonical.as_ref(), "model-from-config") else {
                continue;
            };
            if wire == Wire::Anthropic {
                encoded.insert("model".into(), "model-from-config".into());
            }
            let file = dir.join(format!("{name}-{wire:?}--{target}.json"));
            std::fs::write(file, serde_json::to_vec_pretty(&encoded).unwrap()).unwrap();
            written += 1;
        }
    }
    written
}

#[test]
fn every_token_counting_request_matches_the_providers_published_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let written = count_corpus(dir.path());
    assert!(written >= 30, "only {written} bodies encoded");
    let (ok, report) = validate(dir.path());
    eprintln!("{report}");
    assert!(ok, "token counting requests the providers would refuse:\n{report}");
}

fn validate(dir: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/validate_requests.py");
    let out = Command::new(python()).arg(script).arg(dir).output().expect("run the validator");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_translated_request_matches_the_providers_published_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let written = translate_corpus(dir.path());
    if let Some(keep) = std::env::var_os("SPILLWAY_KEEP_CORPUS") {
        translate_corpus(Path::new(&keep));
    }
    assert!(written >= 30, "only {written} bodies translated");
    let (ok, report) = validate(dir.path());
    eprintln!("{report}");
    assert!(ok, "translated requests the providers would refuse:\n{report}");
}

/// The validator is not a rubber stamp: a field each provider does not define fails it, and
/// the report names the body.
#[test]
fn the_schema_check_refuses_what_a_provider_would() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        (
            "converse",
            r#"{"messages": [{"role": "user", "content": [{"text": "hi", "cache_control": {"type": "ephemeral"}}]}]}"#,
        ),
        (
            "gemini",
            r#"{"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"response_format": "json"}}"#,
        ),
        (
            "anthropic",
            r#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cachePoint": {}}]}]}"#,
        ),
        (
            "bedrock_invoke",
            r#"{"model": "m", "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        (
            "vertex_anthropic",
            r#"{"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "anthropic_version": "vertex-2023-10-16"}"#,
        ),
        (
            "openai",
            r#"{"model": "m", "messages": [{"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}]}"#,
        ),
        (
            "responses",
            r#"{"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x", "is_error": true}]}"#,
        ),
    ];
    for (target, body) in bad {
        std::fs::write(dir.path().join(format!("bad--{target}.json")), body).unwrap();
    }
    let (ok, report) = validate(dir.path());
    assert!(!ok, "{report}");
    for (target, body) in bad {
        assert!(report.contains(&format!("bad--{target}.json:")), "{target}: accepted {body}\n{report}");
    }
    assert!(report.contains(&format!("0 of {} request bodies match", bad.len())), "{report}");
}

/// The Responses fixtures the translator is tested on are what the openai SDK's published types
/// say a reply and a stream are: each reply validates as a `Response`, each event as a
/// `ResponseStreamEvent`, so a fixture that drifts from the schema fails here.
#[test]
fn responses_fixtures_match_the_sdk_types() {
    let code = r#"
import json, pathlib, sys
import pydantic
from openai.types.responses import Response, ResponseStreamEvent
events = pydantic.TypeAdapter(ResponseStreamEvent)
checked = 0
for f in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    if f.name.startswith("response_"):
        Response.model_validate(json.loads(f.read_text()))
        checked += 1
    elif f.suffix == ".sse":
        for block in f.read_text().split("\n\n"):
            lines = block.splitlines()
            if not lines:
                continue
            name = lines[0].removeprefix("event: ")
            data = json.loads(lines[1].removeprefix("data: "))
            assert data["type"] == name, (f.name, name)
            events.validate_python(data)
            checked += 1
print(checked)
"#;
    let out = Command::new(python()).arg("-c").arg(code).arg(fixtures().join("responses")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim().parse::<u32>().unwrap() >= 30, "{stdout}");
}

/// The token-count and embedding replies the translations are tested on are what the providers
/// publish: the anthropic and openai SDKs' types, botocore's `CountTokens` output shape and
/// google-genai's `CountTokensResponse` (through the SDK's own reader of Vertex's reply).
#[test]
fn count_and_embedding_fixtures_match_the_published_types() {
    let code = r#"
import json, pathlib, sys
import botocore.session
from botocore.validate import ParamValidator
from google.genai import types as genai
from anthropic.types import MessageTokensCount
from openai.types import CreateEmbeddingResponse
from openai.types.responses import InputTokenCountResponse
root = pathlib.Path(sys.argv[1])
read = lambda p: json.loads((root / p).read_text())
MessageTokensCount.model_validate(read("count_tokens/anthropic_count_tokens_response.json"), strict=True)
MessageTokensCount.model_validate(read("count_tokens/vertex_anthropic_count_tokens_response.json"), strict=True)
InputTokenCountResponse.model_validate(read("count_tokens/openai_input_tokens_response.json"), strict=True)
# The SDK reads Vertex's REST reply through its own converter, then its type.
from google.genai.models import _CountTokensResponse_from_vertex
gemini = genai.CountTokensResponse.model_validate(_CountTokensResponse_from_vertex(read("count_tokens/gemini_count_tokens_response.json")))
assert gemini.total_tokens == 31, gemini
shape = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("CountTokens").output_shape
report = ParamValidator().validate(read("count_tokens/bedrock_count_tokens_response.json"), shape)
assert not report.has_errors(), report.generate_report()
CreateEmbeddingResponse.model_validate(read("embeddings/openai_embeddings_response.json"), strict=True)
print("ok")
"#;
    let out = Command::new(python()).arg("-c").arg(code).arg(fixtures()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.trim() == "ok", "{stdout}{}", String::from_utf8_lossy(&out.stderr));
}
