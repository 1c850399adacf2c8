//! Byte fuzzing of everything that reads what others send, driven by proptest on the stable
//! toolchain: the SSE framer and every wire's stream decoder (the AWS event-stream one
//! included), reply bodies, inbound request bodies and their translation to every provider.
//!
//! Inputs are random bytes, and real fixtures mutated (bytes flipped, inserted, cut) so that the
//! fuzzer reaches past the first check. The properties: nothing panics, a decoder never holds
//! more than its frame limit, and a stream decodes to the same events however it is split.
//!
//! CI runs `SPILLWAY_FUZZ_CASES` cases per property (default 512); a longer campaign is
//! `SPILLWAY_FUZZ_CASES=200000 cargo nextest run -p spillway-dataplane --test fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spillway_dataplane::canonical::Event;
use spillway_dataplane::inbound;
use spillway_dataplane::protocol::{Wire, anthropic, bedrock, gemini, openai, responses};
use std::path::PathBuf;

const WIRES: [Wire; 7] = [
    Wire::OpenAi,
    Wire::OpenAiResponses,
    Wire::Anthropic,
    Wire::VertexAnthropic,
    Wire::VertexGemini,
    Wire::BedrockConverse,
    Wire::BedrockInvoke,
];

fn runner() -> TestRunner {
    let cases = std::env::var("SPILLWAY_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

fn fixtures(ext: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut out = Vec::new();
    for dir in ["openai", "responses", "anthropic", "bedrock", "vertex"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if ext.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    assert!(!out.is_empty());
    out
}

/// The wire a stream fixture is in, from its directory and name.
fn wire_of(p: &std::path::Path) -> Wire {
    let s = p.to_string_lossy();
    match () {
        _ if s.contains("/openai/") => Wire::OpenAi,
        _ if s.contains("/responses/") => Wire::OpenAiResponses,
        _ if s.contains("/anthropic/") => Wire::Anthropic,
        _ if s.contains("/vertex/") && s.contains("generate_content") => Wire::VertexGemini,
        _ if s.contains("/vertex/") => Wire::VertexAnthropic,
        _ if s.contains("invoke") => Wire::BedrockInvoke,
        _ => Wire::BedrockConverse,
    }
}

/// A mutation of `base`: some bytes flipped, some inserted, maybe cut short.
fn mutate(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..8),
        proptest::collection::vec((0..len, any::<u8>()), 0..4),
        proptest::option::of(0..len),
    )
        .prop_map(move |(flips, inserts, cut)| {
            let mut b = base.clone();
            for (i, v) in flips {
                if i < b.len() {
                    b[i] ^= v;
                }
            }
            for (i, v) in inserts {
                b.insert(i.min(b.len()), v);
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        })
}

/// Feeds `bytes` in pieces cut at `cuts`; the events, and whether the decoder refused.
fn decode(wire: Wire, bytes: &[u8], cuts: &[usize], max_frame: usize) -> (Vec<Event>, bool) {
    let mut d = wire.stream_decoder("m", max_frame);
    let mut events = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut from = 0;
    for to in cuts.into_iter().chain([bytes.len()]) {
        if d.feed(&bytes[from..to], &mut events).is_err() {
            return (events, true);
        }
        from = to;
    }
    (events, false)
}

#[test]
fn stream_decoders_survive_any_bytes() {
    let mut r = runner();
    let input = (
        0..WIRES.len(),
        proptest::collection::vec(any::<u8>(), 0..4096),
        proptest::collection::vec(any::<usize>(), 0..16),
    );
    r.run(&input, |(w, bytes, cuts)| {
        decode(WIRES[w], &bytes, &cuts, 1024);
        Ok(())
    })
    .unwrap();
}

#[test]
fn mutated_provider_streams_never_panic_and_split_streams_decode_alike() {
    for (path, bytes) in fixtures(&[".sse", ".bin"]) {
        let wire = wire_of(&path);
        let (whole, refused) = decode(wire, &bytes, &[], 1 << 20);
        assert!(!refused && !whole.is_empty(), "{}", path.display());
        let mut r = runner();
        r.run(&proptest::collection::vec(any::<usize>(), 0..32), |cuts| {
            prop_assert_eq!(&decode(wire, &bytes, &cuts, 1 << 20).0, &whole, "{} split at {:?}", path.display(), cuts);
            Ok(())
        })
        .unwrap();
        r.run(&(mutate(bytes.clone()), proptest::collection::vec(any::<usize>(), 0..8)), |(m, cuts)| {
            decode(wire, &m, &cuts, 1 << 20);
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn no_decoder_holds_more_than_its_frame_limit() {
    // An endless line, an endless event-stream message: refused once past the limit, not held.
    let mut prelude = 0x7fff_fff0u32.to_be_bytes().to_vec();
    prelude.extend(16u32.to_be_bytes());
    for wire in WIRES {
        let mut d = wire.stream_decoder("m", 4096);
        let mut events = Vec::new();
        let mut fed = 0;
        let filler = vec![b'x'; 512];
        let first: &[u8] =
            if matches!(wire, Wire::BedrockConverse | Wire::BedrockInvoke) { &prelude } else { b"data: {\"" };
        let mut refused = d.feed(first, &mut events).is_err();
        while !refused && fed < 1 << 20 {
            refused = d.feed(&filler, &mut events).is_err();
            fed += filler.len();
        }
        assert!(refused && fed <= 4096 + filler.len(), "{wire:?} took {fed} bytes of one unfinished frame");
    }
}

#[test]
fn reply_bodies_never_panic() {
    let bodies = fixtures(&[".json"]);
    for (path, bytes) in bodies {
        let wire = wire_of(&path);
        let mut r = runner();
        r.run(&mutate(bytes.clone()), |m| {
            let _ = wire.decode_response(&m, "m");
            Ok(())
        })
        .unwrap();
    }
}

/// Random JSON of the shapes requests have: objects of known keys, arrays, strings, numbers.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z_ ]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("text"),
            Just("image_url"),
            Just("tool_use"),
            Just("tool_result"),
            Just("function"),
            Just("auto"),
            Just("required"),
            Just("image")
        ]
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("model"),
        Just("messages"),
        Just("role"),
        Just("content"),
        Just("type"),
        Just("text"),
        Just("tools"),
        Just("tool_choice"),
        Just("tool_calls"),
        Just("function"),
        Just("arguments"),
        Just("name"),
        Just("id"),
        Just("tool_call_id"),
        Just("max_tokens"),
        Just("stream"),
        Just("system"),
        Just("image_url"),
        Just("url"),
        Just("source"),
        Just("input"),
        Just("tool_use_id"),
        Just("parameters"),
        Just("input_schema"),
        Just("stop"),
        Just("instructions"),
        Just("call_id"),
        Just("output"),
        Just("summary"),
        Just("encrypted_content")
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A parsed request goes through the translator to every provider wire.
fn translate_everywhere(req: &inbound::Request) {
    let canonical = match req.protocol {
        spillway_dataplane::protocol::Protocol::OpenAi => openai::decode_request(&req.body),
        spillway_dataplane::protocol::Protocol::Anthropic => anthropic::decode_request(&req.body),
        spillway_dataplane::protocol::Protocol::Responses => responses::decode_request(&req.body),
    };
    if let Ok(c) = canonical {
        let _ = openai::encode_request(&c, "m", openai::MaxTokensField::MaxTokens);
        let _ = anthropic::encode_request(&c, Some("m"));
        let _ = bedrock::encode_converse(&c);
        let _ = gemini::encode_request(&c);
        let _ = responses::encode_request(&c, "m");
    }
}

#[test]
fn inbound_requests_never_panic_in_parsing_or_translation() {
    let headers = http::HeaderMap::new();
    let check = |bytes: &[u8]| {
        if let Ok(r) = inbound::openai::parse(bytes) {
            translate_everywhere(&r);
        }
        if let Ok(r) = inbound::anthropic::parse(bytes, &headers) {
            translate_everywhere(&r);
        }
        if let Ok(r) = inbound::responses::parse(bytes) {
            translate_everywhere(&r);
        }
    };
    let mut r = runner();
    r.run(&proptest::collection::vec(any::<u8>(), 0..2048), |b| {
        check(&b);
        Ok(())
    })
    .unwrap();
    r.run(&json_value(), |v| {
        let mut v = v;
        if let Some(o) = v.as_object_mut() {
            o.insert("model".into(), "m".into());
            o.entry("max_tokens").or_insert(16.into());
        }
        check(v.to_string().as_bytes());
        Ok(())
    })
    .unwrap();
    for (_, bytes) in fixtures(&["request.json", "request_stream.json"]) {
        r.run(&mutate(bytes.clone()), |m| {
            check(&m);
            Ok(())
        })
        .unwrap();
    }
}
