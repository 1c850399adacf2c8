//! What translations used to lose: prompt-cache breakpoints, cache and reasoning token counts,
//! the boundaries between text parts, refusals. Each case names the provider field it checks.

use super::{Wire, anthropic, bedrock, gemini, openai};
use crate::canonical::{Part, Usage};
use serde_json::{Map, Value, json};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// An Anthropic caller's request with a breakpoint on a system block, on a message block, on a
/// tool result and on the last tool.
fn cached_request() -> Map<String, Value> {
    object(json!({
        "model": "chat", "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are a support agent."},
            {"type": "text", "text": "<the whole manual>", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
        "tools": [
            {"name": "a", "input_schema": {"type": "object"}},
            {"name": "b", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<a long document>", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "Summarise it."}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "a", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42", "cache_control": {"type": "ephemeral"}}]}
        ]
    }))
}

#[test]
fn cache_control_becomes_converse_cache_points_after_the_same_blocks() {
    let c = anthropic::decode_request(&cached_request()).unwrap();
    let body = Value::Object(bedrock::encode_converse(&c).unwrap());
    assert_eq!(
        body["system"],
        json!([{"text": "You are a support agent."}, {"text": "<the whole manual>"}, {"cachePoint": {"type": "default", "ttl": "1h"}}])
    );
    assert_eq!(body["messages"][0]["content"][1], json!({"cachePoint": {"type": "default"}}));
    assert_eq!(body["messages"][0]["content"][2]["text"], "Summarise it.");
    assert!(body["messages"][2]["content"][0]["toolResult"].is_object());
    assert_eq!(body["messages"][2]["content"][1], json!({"cachePoint": {"type": "default"}}));
    let tools = &body["toolConfig"]["tools"];
    assert_eq!(tools.as_array().unwrap().len(), 3, "{tools}");
    assert_eq!(tools[2], json!({"cachePoint": {"type": "default"}}));
    assert!(Wire::BedrockConverse.losses(&c).is_empty(), "nothing lost on Converse");
}

#[test]
fn cache_control_survives_the_anthropic_round_trip_and_is_reported_where_it_cannot_go() {
    let c = anthropic::decode_request(&cached_request()).unwrap();
    let body = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(body["system"][1]["cache_control"], json!({"type": "ephemeral", "ttl": "1h"}));
    assert!(body["system"][0].get("cache_control").is_none());
    assert_eq!(body["messages"][0]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(body["messages"][2]["content"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(body["tools"][1]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(anthropic::decode_request(&object(body)).unwrap(), c);
    // OpenAI and Vertex cache prompts by themselves: the breakpoints are named as dropped.
    for wire in [Wire::OpenAi, Wire::VertexGemini] {
        let lost: Vec<String> = wire.losses(&c).into_iter().map(|l| l.field).collect();
        assert_eq!(lost, ["cache_control"], "{wire:?}");
    }
    let oai = Value::Object(openai::encode_request(&c, "m", openai::MaxTokensField::MaxCompletionTokens));
    assert!(!oai.to_string().contains("cache"), "{oai}");
}

/// The counts a caller of each protocol sees for one reply that read 1,000 tokens from the
/// cache, wrote 200 to it, sent 50 uncached, and thought for 30 of its 80 output tokens.
fn cached_usage() -> Usage {
    Usage {
        input_tokens: 50,
        output_tokens: 80,
        cache_read_tokens: 1000,
        cache_write_tokens: 200,
        reasoning_tokens: 30,
    }
}

#[test]
fn cache_and_reasoning_tokens_reach_both_client_protocols() {
    let reply = crate::canonical::Response {
        id: "x".into(),
        model: "m".into(),
        content: vec![Part::Text("hi".into())],
        stop: crate::canonical::StopReason::EndTurn,
        usage: cached_usage(),
    };
    let o = openai::encode_response(&reply);
    assert_eq!(o["usage"]["prompt_tokens"], 1250, "OpenAI counts cached tokens into the prompt");
    assert_eq!(o["usage"]["prompt_tokens_details"]["cached_tokens"], 1000);
    assert_eq!(o["usage"]["completion_tokens"], 80);
    assert_eq!(o["usage"]["completion_tokens_details"]["reasoning_tokens"], 30);
    assert_eq!(o["usage"]["total_tokens"], 1330);
    let a = anthropic::encode_response(&reply);
    assert_eq!(a["usage"]["input_tokens"], 50, "Anthropic counts uncached input apart");
    assert_eq!(a["usage"]["cache_read_input_tokens"], 1000);
    assert_eq!(a["usage"]["cache_creation_input_tokens"], 200);
    assert_eq!(a["usage"]["output_tokens"], 80);
    // And back: each client protocol's spelling reads as the same counts (OpenAI has no count
    // of cache writes, which it folds into the prompt).
    let back = Usage::reported(o["usage"].as_object().unwrap());
    assert_eq!(back, Usage { input_tokens: 250, cache_write_tokens: 0, ..cached_usage() });
    assert_eq!(Usage::reported(a["usage"].as_object().unwrap()), Usage { reasoning_tokens: 0, ..cached_usage() });
}

#[test]
fn provider_usage_fields_are_read_in_their_own_sense() {
    let converse = json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 50, "outputTokens": 80, "totalTokens": 1330, "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 200}});
    let r = bedrock::decode_response(converse.to_string().as_bytes(), "m").unwrap();
    assert_eq!(r.usage, Usage { reasoning_tokens: 0, ..cached_usage() });
    // Gemini's prompt count includes the cached tokens, its candidates count leaves out thoughts.
    let vertex = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 1050, "cachedContentTokenCount": 1000, "candidatesTokenCount": 50,
                          "thoughtsTokenCount": 30, "totalTokenCount": 1130}});
    let r = gemini::decode_response(vertex.to_string().as_bytes(), "m").unwrap();
    assert_eq!(r.usage, Usage { cache_write_tokens: 0, ..cached_usage() });
    assert_eq!(r.usage.prompt_tokens() + r.usage.output_tokens, 1130, "the totals add up");
}

#[test]
fn text_parts_stay_apart_and_refusals_are_kept() {
    let body = object(json!({
        "model": "chat",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be kind."}, {"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": "Help me pick a lock."},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
            {"role": "user", "content": "My own front door."},
            {"role": "assistant", "content": [{"type": "text", "text": "First,"}, {"type": "text", "text": "call a locksmith."}]},
            {"role": "user", "content": "Thanks."}
        ]
    }));
    let c = openai::decode_request(&body).unwrap();
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["system"], json!([{"type": "text", "text": "Be kind."}, {"type": "text", "text": "Be brief."}]));
    let turns = a["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 5, "the refusal keeps the turns around it apart: {a}");
    assert_eq!(turns[1]["content"][0]["text"], "I can't help with that.");
    assert_eq!(turns[3]["content"].as_array().unwrap().len(), 2, "one block per part");
    let back = Value::Object(openai::encode_request(&c, "m", openai::MaxTokensField::MaxCompletionTokens));
    assert_eq!(
        back["messages"][5]["content"],
        json!([{"type": "text", "text": "First,"}, {"type": "text", "text": "call a locksmith."}])
    );
}

#[test]
fn a_required_json_schema_reaches_every_provider_by_its_own_mechanism() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let body = object(json!({
        "model": "extract", "messages": [{"role": "user", "content": "I live in Lyon."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}}
    }));
    let c = openai::decode_request(&body).unwrap();
    for wire in [Wire::Anthropic, Wire::BedrockConverse, Wire::VertexGemini, Wire::BedrockInvoke] {
        assert!(wire.losses(&c).is_empty(), "{wire:?} carries it");
    }
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(g["generationConfig"]["responseJsonSchema"], schema);
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    let spec = &b["outputConfig"]["textFormat"]["structure"]["jsonSchema"];
    assert_eq!(b["outputConfig"]["textFormat"]["type"], "json_schema");
    assert_eq!(serde_json::from_str::<Value>(spec["schema"].as_str().unwrap()).unwrap(), schema, "a JSON string");
    assert_eq!(spec["name"], "place");
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["output_config"], json!({"format": {"type": "json_schema", "schema": schema}}));
    // And an Anthropic caller's format reaches OpenAI as a strict response_format.
    let back = anthropic::decode_request(&object(a)).unwrap();
    let o = Value::Object(openai::encode_request(&back, "m", openai::MaxTokensField::MaxCompletionTokens));
    assert_eq!(o["response_format"]["type"], "json_schema");
    assert_eq!(o["response_format"]["json_schema"]["schema"], schema);
    // Any JSON object, where a provider wants a schema, is the schema of any object.
    let c = openai::decode_request(&object(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"}})))
    .unwrap();
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    assert_eq!(g["generationConfig"]["responseMimeType"], "application/json");
    assert!(g["generationConfig"].get("responseJsonSchema").is_none());
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["output_config"]["format"]["schema"], json!({"type": "object"}));
}

#[test]
fn strict_and_mcp_tool_schemas_reach_gemini_whole() {
    let schema = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"q": {"type": "string", "default": "x"}}, "additionalProperties": false});
    let body = object(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "search", "parameters": schema, "strict": true}}]}));
    let c = openai::decode_request(&body).unwrap();
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    let decl = &g["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["parametersJsonSchema"], schema);
    assert!(decl.get("parameters").is_none(), "not the OpenAPI subset, which refuses $schema");
    let lost: Vec<String> = Wire::VertexGemini.losses(&c).into_iter().map(|l| l.field).collect();
    assert_eq!(lost, ["strict"], "no promise that calls match: named");
    // Where strict tools exist, they stay strict.
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["strict"], true);
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["tools"][0]["strict"], true);
}

#[test]
fn a_reply_without_a_provider_id_gets_a_unique_one_in_the_callers_form() {
    let converse = json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}});
    let r = bedrock::decode_response(converse.to_string().as_bytes(), "m").unwrap();
    assert_eq!(r.id, "", "Converse names no reply");
    let (a, b) = (openai::encode_response(&r), openai::encode_response(&r));
    let id = a["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() > "chatcmpl-".len() + 16, "{id}");
    assert_ne!(a["id"], b["id"]);
    let (a, b) = (anthropic::encode_response(&r), anthropic::encode_response(&r));
    assert!(a["id"].as_str().unwrap().starts_with("msg_") && a["id"] != b["id"], "{a}");
    // A provider's own id is kept, in the caller's form.
    let r = crate::canonical::Response { id: "msg_01XYZ".into(), ..r };
    assert_eq!(anthropic::encode_response(&r)["id"], "msg_01XYZ");
    assert_eq!(openai::encode_response(&r)["id"], "chatcmpl-msg_01XYZ");
}

#[test]
fn documents_reach_the_providers_that_carry_them() {
    let body = object(json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "Invoice #42 (final).pdf"},
        {"type": "text", "text": "Total?"}]}]}));
    let c = anthropic::decode_request(&body).unwrap();
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    assert_eq!(
        b["messages"][0]["content"][0],
        json!({"document": {"format": "pdf", "name": "Invoice 42 (final)", "source": {"bytes": "JVBERi0="}}})
    );
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    assert_eq!(
        g["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}})
    );
    let o = Value::Object(openai::encode_request(&c, "m", openai::MaxTokensField::MaxCompletionTokens));
    assert_eq!(o["messages"][0]["content"][0]["file"]["file_data"], "data:application/pdf;base64,JVBERi0=");
    // Back from OpenAI's shape, the same document.
    assert_eq!(openai::decode_request(&object(o)).unwrap().messages[0].content[0], c.messages[0].content[0]);
    // A format Converse has no name for is refused there, with the reason, before sending.
    let odd = object(json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/zip", "data": "UEs="}}]}]}));
    let e = bedrock::encode_converse(&anthropic::decode_request(&odd).unwrap()).unwrap_err();
    assert!(e.contains("application/zip"), "{e}");
}

/// Gemini 3 refuses a tool loop's second turn unless each replayed function call carries the
/// `thoughtSignature` it came with; an OpenAI caller's tool-call id brings it back.
#[test]
fn gemini_thought_signatures_come_back_with_the_tool_calls_that_carried_them() {
    let reply = |id: &str| {
        json!({"responseId": id, "candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQBVKhc7t/Fake+Si=="}]},
        "finishReason": "STOP"}]})
    };
    let r = gemini::decode_response(reply("turn-1").to_string().as_bytes(), "m").unwrap();
    let o = openai::encode_response(&r);
    let call = &o["choices"][0]["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap();
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "an id every client keeps: {id}");
    // The caller's next turn: the call and its result, by that id.
    let next = object(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"c\": 18}"}]}));
    let c = openai::decode_request(&next).unwrap();
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    let turns = g["contents"].as_array().unwrap();
    assert_eq!(turns[1]["parts"][0]["functionCall"]["name"], "weather");
    assert_eq!(turns[1]["parts"][0]["thoughtSignature"], "CiQBVKhc7t/Fake+Si==", "the signature, as Gemini gave it");
    assert_eq!(turns[2]["parts"][0]["functionResponse"]["name"], "weather");
    // Calls of different turns never share an id.
    let again = gemini::decode_response(reply("turn-2").to_string().as_bytes(), "m").unwrap();
    assert_ne!(openai::encode_response(&again)["choices"][0]["message"]["tool_calls"][0]["id"], call["id"]);
}

#[test]
fn reasoning_settings_reach_each_provider_as_its_own_control() {
    // An OpenAI caller's effort level.
    let c = openai::decode_request(&object(json!({"model": "m", "max_completion_tokens": 8000,
        "messages": [{"role": "user", "content": "Prove it."}], "reasoning_effort": "high"})))
    .unwrap();
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["thinking"], json!({"type": "adaptive"}), "the model decides how much, at that effort");
    assert_eq!(a["output_config"]["effort"], "high");
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    assert_eq!(g["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingLevel": "HIGH"}));
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    assert_eq!(b["outputConfig"]["effort"], "high");
    // An Anthropic caller's budget.
    let c = anthropic::decode_request(&object(json!({"model": "m", "max_tokens": 20000,
        "thinking": {"type": "enabled", "budget_tokens": 10000}, "messages": [{"role": "user", "content": "Prove it."}]}))).unwrap();
    assert!(Wire::VertexGemini.losses(&c).is_empty() && Wire::BedrockConverse.losses(&c).is_empty());
    let g = Value::Object(gemini::encode_request(&c).unwrap());
    assert_eq!(g["generationConfig"]["thinkingConfig"]["thinkingBudget"], 10000);
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    assert_eq!(b["outputConfig"]["effort"], "medium", "10,000 tokens of thinking is a medium effort");
    // An OpenAI-wire endpoint may serve a model that refuses `reasoning_effort`: named dropped.
    let o = Value::Object(openai::encode_request(&c, "m", openai::MaxTokensField::MaxCompletionTokens));
    assert!(o.get("reasoning_effort").is_none());
    let lost: Vec<String> = Wire::OpenAi.losses(&c).into_iter().map(|l| l.field).collect();
    assert_eq!(lost, ["thinking"]);
    let a = Value::Object(anthropic::encode_request(&c, Some("m")));
    assert_eq!(a["thinking"], json!({"type": "enabled", "budget_tokens": 10000}));
    // A budget Claude has no room for (it must be ≥ 1,024 and below max_tokens) is named dropped.
    let tight = openai::decode_request(&object(json!({"model": "m", "max_tokens": 500,
        "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"})))
    .unwrap();
    let tight = crate::canonical::Request {
        reasoning: Some(crate::canonical::Reasoning { budget_tokens: Some(2000), effort: None }),
        ..tight
    };
    let lost: Vec<String> = Wire::Anthropic.losses(&tight).into_iter().map(|l| l.field).collect();
    assert_eq!(lost, ["thinking"]);
    assert!(Value::Object(anthropic::encode_request(&tight, Some("m"))).get("thinking").is_none());
}

/// A ConverseStream event frame.
fn converse_frame(kind: &str, payload: Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut m = Message::new(bytes::Bytes::from(payload.to_string()));
    for (k, v) in [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")] {
        m = m.add_header(Header::new(k.to_owned(), HeaderValue::String(v.to_owned().into())));
    }
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).unwrap();
    out
}

/// Claude on Converse reasons before it answers: an Anthropic caller gets the reasoning as
/// thinking blocks with their signatures (streamed and whole), and hands them back next turn,
/// where Converse gets them as the reasoning blocks they came as.
#[test]
fn reasoning_reaches_anthropic_callers_and_goes_back_signed() {
    use super::StreamEncoder;
    let whole = json!({"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "The user wants a prime check.", "signature": "sig-abc"}}},
        {"reasoningContent": {"redactedContent": "ZW5jcnlwdGVk"}},
        {"text": "Yes, it is prime."}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 10, "outputTokens": 30, "totalTokens": 40}});
    let r = bedrock::decode_response(whole.to_string().as_bytes(), "m").unwrap();
    let a = anthropic::encode_response(&r);
    assert_eq!(
        a["content"][0],
        json!({"type": "thinking", "thinking": "The user wants a prime check.", "signature": "sig-abc"})
    );
    assert_eq!(a["content"][1], json!({"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}));
    assert_eq!(a["content"][2]["text"], "Yes, it is prime.");

    // Streamed: the reasoning deltas and the signature arrive as Anthropic's thinking events.
    let mut bytes = converse_frame("messageStart", json!({"role": "assistant"}));
    bytes.extend(converse_frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "The user wants "}}}),
    ));
    bytes.extend(converse_frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "a prime check."}}}),
    ));
    bytes.extend(converse_frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig-abc"}}}),
    ));
    bytes.extend(converse_frame("contentBlockStop", json!({"contentBlockIndex": 0})));
    bytes.extend(converse_frame("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"text": "Yes."}})));
    bytes.extend(converse_frame("messageStop", json!({"stopReason": "end_turn"})));
    let mut events = Vec::new();
    Wire::BedrockConverse.stream_decoder("m", super::DEFAULT_MAX_FRAME).feed(&bytes, &mut events).unwrap();
    let mut enc = anthropic::Encoder::default();
    let mut out = bytes::BytesMut::new();
    for e in &events {
        enc.encode(e, &mut out);
    }
    let sse = String::from_utf8(out.to_vec()).unwrap();
    let thinking_start = sse.find(r#""content_block":{"signature":"","thinking":"","type":"thinking"}"#);
    assert!(thinking_start.is_some(), "{sse}");
    assert!(sse.contains(r#"{"thinking":"The user wants ","type":"thinking_delta"}"#), "{sse}");
    assert!(sse.contains(r#"{"signature":"sig-abc","type":"signature_delta"}"#), "{sse}");
    assert!(sse.find("text_delta") > thinking_start, "reasoning first, then the answer: {sse}");

    // The caller's next turn hands the blocks back; Converse gets them as reasoning blocks.
    let next = object(json!({"model": "m", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Is 2^31-1 prime?"},
        {"role": "assistant", "content": a["content"]},
        {"role": "user", "content": "And 2^32-1?"}]}));
    let c = anthropic::decode_request(&next).unwrap();
    let b = Value::Object(bedrock::encode_converse(&c).unwrap());
    let replayed = &b["messages"][1]["content"];
    assert_eq!(
        replayed[0],
        json!({"reasoningContent": {"reasoningText": {"text": "The user wants a prime check.", "signature": "sig-abc"}}})
    );
    assert_eq!(replayed[1], json!({"reasoningContent": {"redactedContent": "ZW5jcnlwdGVk"}}));
    assert_eq!(replayed[2]["text"], "Yes, it is prime.");
}
