//! Golden translation tests over the recorded provider fixtures: every direction of every
//! pair carries the same text, tool calls, stop reason and usage.

use super::{Protocol, Wire, anthropic, openai, stream_encoder};
use crate::canonical::{Event, Part, StopReason, Usage};
use crate::sse;
use bytes::BytesMut;
use serde_json::{Map, Value, json};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A fixture body without its `_comment`-style annotations.
fn body(path: &str) -> Map<String, Value> {
    let mut v: Map<String, Value> = serde_json::from_slice(&fixture(path)).unwrap();
    v.retain(|k, _| !k.starts_with('_'));
    v
}

/// What a client sees of a stream, whatever its protocol.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    text: String,
    tools: Vec<(String, String, Value)>,
    stop: Option<StopReason>,
    usage: Usage,
    ended: bool,
    error: Option<String>,
    thinking: String,
    signature: Option<String>,
}

fn wire(p: Protocol) -> Wire {
    match p {
        Protocol::OpenAi => Wire::OpenAi,
        Protocol::Anthropic => Wire::Anthropic,
        Protocol::Responses => Wire::OpenAiResponses,
    }
}

fn seen(p: Protocol, bytes: &[u8]) -> Seen {
    seen_wire(wire(p), bytes)
}

fn seen_wire(w: Wire, bytes: &[u8]) -> Seen {
    let mut d = w.stream_decoder("m", crate::protocol::DEFAULT_MAX_FRAME);
    let mut events = Vec::new();
    d.feed(bytes, &mut events).unwrap();
    let mut s = Seen::default();
    let mut args: Vec<String> = Vec::new();
    for e in events {
        match e {
            Event::Text(t) => s.text.push_str(&t),
            Event::ToolStart { id, name, .. } => {
                s.tools.push((id, name, Value::Null));
                args.push(String::new());
            }
            Event::ToolArgs { index, fragment } => args[index].push_str(&fragment),
            Event::Stop(r) => s.stop = Some(r),
            Event::Usage(u) => s.usage.merge(u),
            Event::End => s.ended = true,
            Event::Error { message, .. } => s.error = Some(message),
            Event::Thinking(t) => s.thinking.push_str(&t),
            Event::ThinkingSignature(sig) => s.signature = Some(sig),
            Event::Start { .. } => {}
        }
    }
    for (t, a) in s.tools.iter_mut().zip(args) {
        t.2 = serde_json::from_str(&a).unwrap_or_else(|e| panic!("tool arguments {a:?} do not parse: {e}"));
    }
    s
}

/// A stream cut by an error never reaches the end where OpenAI reports usage, so usage is
/// compared only for streams that end.
fn comparable(mut s: Seen) -> Seen {
    if !s.ended {
        s.usage = Usage::default();
    }
    s
}

/// Provider stream in `from` → client stream in `to`, as the sidecar does it.
fn translate(from: Protocol, to: Protocol, bytes: &[u8]) -> Vec<u8> {
    translate_wire(wire(from), to, bytes)
}

fn translate_wire(from: Wire, to: Protocol, bytes: &[u8]) -> Vec<u8> {
    let mut d = from.stream_decoder("m", crate::protocol::DEFAULT_MAX_FRAME);
    let mut e = stream_encoder(to, true);
    let (mut events, mut out) = (Vec::new(), BytesMut::new());
    d.feed(bytes, &mut events).unwrap();
    for ev in &events {
        e.encode(ev, &mut out);
    }
    out.to_vec()
}

#[test]
fn anthropic_streams_reach_openai_clients_intact() {
    for name in ["messages_stream.sse", "messages_stream_tool_use.sse", "messages_stream_midstream_overloaded.sse"] {
        let original = fixture(&format!("anthropic/{name}"));
        let direct = seen(Protocol::Anthropic, &original);
        let translated = translate(Protocol::Anthropic, Protocol::OpenAi, &original);
        assert_eq!(
            comparable(seen(Protocol::OpenAi, &translated)),
            comparable(direct),
            "{name}:\n{}",
            String::from_utf8_lossy(&translated)
        );
    }
    let direct = seen(Protocol::Anthropic, &fixture("anthropic/messages_stream_tool_use.sse"));
    assert_eq!(direct.tools[0].1, "get_weather");
    assert_eq!(direct.stop, Some(StopReason::ToolUse));
    assert!(direct.usage.input_tokens > 0 && direct.usage.output_tokens > 0, "{:?}", direct.usage);
}

#[test]
fn openai_streams_reach_anthropic_clients_intact() {
    for name in ["chat_stream.sse", "chat_stream_tool_call.sse", "chat_stream_midstream_error.sse"] {
        let original = fixture(&format!("openai/{name}"));
        let direct = seen(Protocol::OpenAi, &original);
        let translated = translate(Protocol::OpenAi, Protocol::Anthropic, &original);
        assert_eq!(
            comparable(seen(Protocol::Anthropic, &translated)),
            comparable(direct),
            "{name}:\n{}",
            String::from_utf8_lossy(&translated)
        );
    }
    let direct = seen(Protocol::OpenAi, &fixture("openai/chat_stream_tool_call.sse"));
    assert_eq!(direct.tools.len(), 2, "two parallel calls");
}

#[test]
fn translated_anthropic_stream_has_the_documented_event_order() {
    let translated = translate(Protocol::OpenAi, Protocol::Anthropic, &fixture("openai/chat_stream_tool_call.sse"));
    let names: Vec<String> =
        sse::events(&translated).filter_map(sse::event_name).map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    // Every block that starts stops, and indexes count up from 0.
    let starts = names.iter().filter(|n| *n == "content_block_start").count();
    assert_eq!(starts, names.iter().filter(|n| *n == "content_block_stop").count());
    assert_eq!(starts, 2, "{names:?}");
}

#[test]
fn openai_request_fixture_becomes_a_valid_anthropic_request() {
    let c = openai::decode_request(&body("openai/chat_request.json")).unwrap();
    let a = Value::Object(anthropic::encode_request(&c, Some("claude-x")));
    assert_eq!(a["model"], "claude-x");
    assert_eq!(a["system"], "You are a concise weather assistant.");
    let roles: Vec<&str> = a["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles.first(), Some(&"user"));
    assert!(roles.windows(2).all(|w| w[0] != w[1]), "roles alternate: {roles:?}");
    let first = &a["messages"][0]["content"];
    assert_eq!(first[1]["source"]["type"], "base64");
    assert_eq!(first[1]["source"]["media_type"], "image/png");
    let calls: Vec<&Value> =
        a["messages"][1]["content"].as_array().unwrap().iter().filter(|b| b["type"] == "tool_use").collect();
    assert_eq!(calls[0]["input"], json!({"location": "Paris, France"}));
    let results = a["messages"][2]["content"].as_array().unwrap();
    assert_eq!(results.len(), 2, "both tool results in one user turn");
    assert_eq!(results[0]["tool_use_id"], calls[0]["id"]);
    assert!(a["tools"][0]["input_schema"].is_object());
    assert!(a["max_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn anthropic_request_fixture_becomes_a_valid_openai_request() {
    let c = anthropic::decode_request(&body("anthropic/messages_request.json")).unwrap();
    let o = Value::Object(openai::encode_request(&c, "gpt-x", openai::MaxTokensField::MaxCompletionTokens));
    let msgs = o["messages"].as_array().unwrap();
    assert_eq!(msgs[0], json!({"role": "system", "content": "You are a concise weather assistant."}));
    assert!(msgs[1]["content"][1]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    let call = &msgs[2]["tool_calls"][0];
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], call["id"]);
    assert_eq!(o["max_completion_tokens"], 1024);
    assert_eq!(o["tools"][0]["function"]["name"], "get_weather");
}

#[test]
fn non_streaming_replies_round_trip_both_ways() {
    let a = anthropic::decode_response(&fixture("anthropic/messages_response_tool_use.json")).unwrap();
    let via_openai = openai::decode_response(openai::encode_response(&a).to_string().as_bytes()).unwrap();
    assert_eq!((via_openai.content, via_openai.stop, via_openai.usage), (a.content.clone(), a.stop.clone(), a.usage));

    let o = openai::decode_response(&fixture("openai/chat_response_tool_calls.json")).unwrap();
    let via_anthropic = anthropic::decode_response(anthropic::encode_response(&o).to_string().as_bytes()).unwrap();
    assert_eq!((via_anthropic.content, via_anthropic.stop, via_anthropic.usage), (o.content.clone(), o.stop, o.usage));
    assert!(o.content.iter().filter(|p| matches!(p, Part::ToolUse { .. })).count() == 2);
}

#[test]
fn untranslatable_requests_are_refused_with_the_reason() {
    let bad_args = json!({"model": "f", "messages": [{"role": "assistant", "content": null,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]});
    let e = openai::decode_request(bad_args.as_object().unwrap()).unwrap_err();
    assert!(e.message.contains("messages[0].tool_calls[0].function.arguments"), "{}", e.message);

    let audio =
        json!({"model": "f", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]});
    assert!(openai::decode_request(audio.as_object().unwrap()).unwrap_err().message.contains("input_audio"));

    let server_tool = json!({"model": "f", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
    assert!(anthropic::decode_request(server_tool.as_object().unwrap()).unwrap_err().message.contains("server tool"));
}

#[test]
fn responses_streams_decode_to_their_text_reasoning_calls_and_usage() {
    let s = seen_wire(Wire::OpenAiResponses, &fixture("responses/stream_text.sse"));
    assert_eq!(s.text, "Hello! How can I help today?");
    assert_eq!(s.thinking, "**Greeting the user**\n\nA short hello is enough.");
    assert_eq!((s.stop, s.ended), (Some(StopReason::EndTurn), true));
    // `input_tokens` of the Responses API counts cached tokens; output counts reasoning.
    assert_eq!((s.usage.input_tokens, s.usage.output_tokens, s.usage.reasoning_tokens), (14, 75, 64));
    let s = seen_wire(Wire::OpenAiResponses, &fixture("responses/stream_function_call.sse"));
    assert_eq!(s.tools, [("call_X1y2Z3w4".to_owned(), "get_weather".to_owned(), json!({"city": "Paris"}))]);
    assert_eq!(s.stop, Some(StopReason::ToolUse));
    let s = seen_wire(Wire::OpenAiResponses, &fixture("responses/stream_failed.sse"));
    assert_eq!(s.error.as_deref(), Some("The model produced invalid content."));
}

#[test]
fn a_chat_stream_reaches_a_responses_client_as_its_typed_events() {
    let translated = translate(Protocol::OpenAi, Protocol::Responses, &fixture("openai/chat_stream_tool_call.sse"));
    let original = seen(Protocol::OpenAi, &fixture("openai/chat_stream_tool_call.sse"));
    let s = seen(Protocol::Responses, &translated);
    assert_eq!((&s.tools, &s.stop, s.ended), (&original.tools, &original.stop, true));
    let text = String::from_utf8(translated).unwrap();
    let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(kinds.contains(&"response.function_call_arguments.delta"), "{kinds:?}");
    // Every event is numbered, from 0, in order.
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..numbers.len() as u64).collect::<Vec<_>>());
}

#[test]
fn responses_tool_namespaces_are_flat_for_other_providers_and_split_again_for_the_caller() {
    let body = json!({"model": "m", "input": [
        {"role": "user", "content": "spawn one"},
        {"type": "function_call", "call_id": "c1", "namespace": "multi_agent_v1", "name": "spawn_agent", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"}],
        "tools": [{"type": "namespace", "name": "multi_agent_v1", "description": "agents",
                   "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {}}}]},
                  {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}}]});
    let c = super::responses::decode_request(body.as_object().unwrap()).unwrap();
    let names: Vec<&str> = c.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["multi_agent_v1__spawn_agent", "exec_command"]);
    assert!(matches!(&c.messages[1].content[0], Part::ToolUse { name, .. } if name == "multi_agent_v1__spawn_agent"));
    let reply = crate::canonical::Response {
        id: String::new(),
        model: "m".into(),
        content: vec![
            Part::ToolUse { id: "c2".into(), name: "multi_agent_v1__wait_agent".into(), input: json!({}) },
            Part::ToolUse { id: "c3".into(), name: "exec_command".into(), input: json!({}) },
        ],
        stop: StopReason::ToolUse,
        usage: Usage::default(),
    };
    let out = super::responses::encode_response(&reply, &c.namespaces);
    assert_eq!(
        (&out["output"][0]["namespace"], &out["output"][0]["name"]),
        (&json!("multi_agent_v1"), &json!("wait_agent"))
    );
    assert!(out["output"][1].get("namespace").is_none() && out["output"][1]["name"] == "exec_command");
    // The stream splits the same way.
    let mut e = Protocol::Responses.api().stream_encoder(true, Some(&c));
    let mut bytes = BytesMut::new();
    for ev in [
        Event::Start { id: "r".into(), model: "m".into() },
        Event::ToolStart { index: 0, id: "c2".into(), name: "multi_agent_v1__wait_agent".into() },
        Event::ToolArgs { index: 0, fragment: "{}".into() },
        Event::Stop(StopReason::ToolUse),
        Event::End,
    ] {
        e.encode(&ev, &mut bytes);
    }
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.contains(r#""namespace":"multi_agent_v1""#) && text.contains(r#""name":"wait_agent""#), "{text}");
    assert!(!text.contains("multi_agent_v1__"), "{text}");
}
