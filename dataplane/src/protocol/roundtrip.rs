//! Property tests: random canonical requests and streams survive every protocol's encoder and
//! decoder unchanged.

use super::{Protocol, Wire, anthropic, openai, responses, stream_encoder};
use crate::canonical::{Event, Image, Message, Part, Request, Role, StopReason, Tool, ToolChoice, Usage};
use bytes::BytesMut;
use proptest::prelude::*;
use serde_json::json;

fn text() -> impl Strategy<Value = String> {
    // Printable text including quotes, backslashes, newlines and non-ASCII.
    "[a-zA-Z0-9 \"\\\\\n{}é漢🙂]{1,24}"
}

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,11}"
}

fn image() -> impl Strategy<Value = Image> {
    prop_oneof![
        "[a-z]{3,8}".prop_map(|h| Image::Url(format!("https://{h}.example/cat.png"))),
        ("(png|jpeg|webp)", "[A-Za-z0-9+/]{4,40}")
            .prop_map(|(t, d)| Image::Base64 { media_type: format!("image/{t}"), data: d }),
    ]
}

fn input() -> impl Strategy<Value = serde_json::Value> {
    proptest::collection::btree_map(
        ident(),
        prop_oneof![text().prop_map(|t| json!(t)), any::<i32>().prop_map(|n| json!(n))],
        0..4,
    )
    .prop_map(|m| serde_json::to_value(m).unwrap_or_default())
}

/// A well-formed conversation: alternating turns from the user; a user turn is tool results,
/// then text and images; an assistant turn is optional text, then tool calls.
fn conversation() -> impl Strategy<Value = Vec<Message>> {
    let user = (
        proptest::collection::vec((ident(), text()), 0..3),
        proptest::collection::vec(prop_oneof![text().prop_map(Part::Text), image().prop_map(Part::Image)], 1..4),
    )
        .prop_map(|(results, rest)| {
            let mut content: Vec<Part> = results
                .into_iter()
                .map(|(id, t)| Part::ToolResult {
                    tool_use_id: format!("call_{id}"),
                    content: vec![Part::Text(t)],
                    is_error: false,
                })
                .collect();
            content.extend(rest);
            Message { role: Role::User, content }
        });
    let assistant = (proptest::option::of(text()), proptest::collection::vec((ident(), ident(), input()), 0..3))
        .prop_map(|(t, calls)| {
            let mut content: Vec<Part> = t.into_iter().map(Part::Text).collect();
            content.extend(calls.into_iter().map(|(id, name, input)| Part::ToolUse {
                id: format!("call_{id}"),
                name,
                input,
            }));
            if content.is_empty() {
                content.push(Part::Text("ok".into()));
            }
            Message { role: Role::Assistant, content }
        });
    proptest::collection::vec((user, assistant), 1..4).prop_map(|turns| {
        let mut out: Vec<Message> = turns.into_iter().flat_map(|(u, a)| [u, a]).collect();
        out.pop();
        out
    })
}

prop_compose! {
    fn request()(
        system in proptest::option::of(text()),
        messages in conversation(),
        tools in proptest::collection::vec((ident(), proptest::option::of(text())), 0..3),
        choice in 0..5u8,
        no_parallel in any::<bool>(),
        max_tokens in 1..100_000u64,
        temperature in proptest::option::of(0.0..1.0f64),
        top_p in proptest::option::of(0.0..1.0f64),
        stop in proptest::collection::vec(text(), 0..3),
        stream in any::<bool>(),
        user in proptest::option::of(ident()),
    ) -> Request {
        let tools: Vec<Tool> = tools.into_iter().map(|(name, description)| Tool {
            name, description, schema: json!({"type": "object", "properties": {"q": {"type": "string"}}}), strict: false, cache: None,
        }).collect();
        let tool_choice = if tools.is_empty() { None } else {
            match choice { 0 => None, 1 => Some(ToolChoice::Auto), 2 => Some(ToolChoice::Any), 3 => Some(ToolChoice::None),
                _ => Some(ToolChoice::Tool(tools[0].name.clone())) }
        };
        Request {
            system: system.into_iter().map(Part::Text).collect(), messages, no_parallel_tools: no_parallel && !tools.is_empty(),
            tools, tool_choice, max_tokens: Some(max_tokens), temperature, top_p, top_k: None, stop, stream,
            include_usage: stream, user, format: None, reasoning: None, unrepresented: Vec::new(), namespaces: Vec::new(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip_through_openai(req in request()) {
        let body = openai::encode_request(&req, "m", openai::MaxTokensField::MaxCompletionTokens);
        prop_assert_eq!(openai::decode_request(&body).unwrap(), req);
    }

    #[test]
    fn requests_round_trip_through_anthropic(req in request()) {
        let body = anthropic::encode_request(&req, Some("m"));
        // Anthropic clients always get usage in their streams; and disabling parallel tool use
        // needs a tool_choice object, so "no choice" becomes the equivalent explicit `auto`;
        // under `none` no tool runs, so there is nothing to run in parallel.
        let tool_choice = match (&req.tool_choice, req.no_parallel_tools) {
            (None, true) => Some(ToolChoice::Auto),
            (c, _) => c.clone(),
        };
        let no_parallel_tools = req.no_parallel_tools && tool_choice != Some(ToolChoice::None);
        // The Messages API has no sampling parameters: they are not sent, and reported lost.
        let lost: Vec<String> = super::Wire::Anthropic.losses(&req).into_iter().map(|l| l.field).collect();
        prop_assert_eq!(lost.contains(&"temperature".to_owned()), req.temperature.is_some());
        prop_assert_eq!(lost.contains(&"top_p".to_owned()), req.top_p.is_some());
        let want = Request { include_usage: true, tool_choice, no_parallel_tools, temperature: None, top_p: None, ..req };
        prop_assert_eq!(anthropic::decode_request(&body).unwrap(), want);
    }

    #[test]
    fn requests_round_trip_through_responses(req in request()) {
        let body = responses::encode_request(&req, "m");
        // Responses streams always end with the usage; stop sequences have no place there
        // (reported lost).
        let lost: Vec<String> = Wire::OpenAiResponses.losses(&req).into_iter().map(|l| l.field).collect();
        prop_assert_eq!(lost.contains(&"stop".to_owned()), !req.stop.is_empty());
        let want = Request { include_usage: true, stop: Vec::new(), ..req };
        prop_assert_eq!(responses::decode_request(&body).unwrap(), want);
    }

    #[test]
    fn streams_round_trip_through_every_client_protocol(events in stream()) {
        for p in [Protocol::OpenAi, Protocol::Anthropic, Protocol::Responses] {
            let mut enc = stream_encoder(p, true);
            let mut out = BytesMut::new();
            for e in &events {
                enc.encode(e, &mut out);
            }
            let wire = match p {
                Protocol::OpenAi => Wire::OpenAi,
                Protocol::Anthropic => Wire::Anthropic,
                Protocol::Responses => Wire::OpenAiResponses,
            };
            let mut dec = wire.stream_decoder("m", crate::protocol::DEFAULT_MAX_FRAME);
            let mut back = Vec::new();
            dec.feed(&out, &mut back).unwrap();
            prop_assert_eq!(summary(&back), summary(&events), "{:?}", p);
        }
    }
}

/// A stream as providers produce it: start, text and tool calls, stop, usage, end.
fn stream() -> impl Strategy<Value = Vec<Event>> {
    (
        proptest::collection::vec(text(), 0..5),
        proptest::collection::vec((ident(), proptest::collection::vec(text(), 1..4)), 0..3),
        1..10_000u64,
        1..10_000u64,
    )
        .prop_map(|(texts, calls, input, output)| {
            let mut ev = vec![Event::Start { id: "msg_1".into(), model: "m".into() }];
            ev.extend(texts.into_iter().map(Event::Text));
            let stop = if calls.is_empty() { StopReason::EndTurn } else { StopReason::ToolUse };
            for (i, (name, fragments)) in calls.into_iter().enumerate() {
                ev.push(Event::ToolStart { index: i, id: format!("call_{i}"), name });
                ev.extend(fragments.into_iter().map(|f| Event::ToolArgs { index: i, fragment: f }));
            }
            ev.push(Event::Stop(stop));
            ev.push(Event::Usage(Usage { input_tokens: input, output_tokens: output, ..Usage::default() }));
            ev.push(Event::End);
            ev
        })
}

/// What a client would assemble from a stream.
#[derive(Debug, PartialEq)]
struct Summary {
    text: String,
    /// Each call's id, name and argument text.
    calls: Vec<(String, String, String)>,
    stop: Option<StopReason>,
    usage: Usage,
    ended: bool,
}

fn summary(events: &[Event]) -> Summary {
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let (mut stop, mut usage, mut ended) = (None, Usage::default(), false);
    for e in events {
        match e {
            Event::Text(t) => text.push_str(t),
            Event::ToolStart { id, name, .. } => calls.push((id.clone(), name.clone(), String::new())),
            Event::ToolArgs { index, fragment } => {
                if let Some(c) = calls.get_mut(*index) {
                    c.2.push_str(fragment);
                }
            }
            Event::Stop(r) => stop = Some(r.clone()),
            Event::Usage(u) => usage.merge(*u),
            Event::End => ended = true,
            Event::Start { .. } | Event::Error { .. } | Event::Thinking(_) | Event::ThinkingSignature(_) => {}
        }
    }
    Summary { text, calls, stop, usage, ended }
}
