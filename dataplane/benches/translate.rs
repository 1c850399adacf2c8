//! Stream translation throughput: provider stream bytes → canonical events → an OpenAI client's
//! SSE, per core (criterion runs it on one thread). Run: `cargo bench -p spillway-dataplane`.
//!
//! Inputs are built the way providers send them: Bedrock ConverseStream as AWS event-stream
//! frames (CRC-checked on decode), Anthropic as SSE. Each text delta is one event.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spillway_dataplane::protocol::{Protocol, Wire, stream_encoder};
use std::hint::black_box;

const DELTAS: usize = 10_000;

fn frame(kind: &str, payload: &str) -> Vec<u8> {
    let mut m = Message::new(Bytes::from(payload.to_owned()));
    for (k, v) in [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")] {
        m = m.add_header(Header::new(k.to_owned(), HeaderValue::String(v.to_owned().into())));
    }
    let mut out = Vec::new();
    write_message_to(&m, &mut out).expect("encode frame");
    out
}

fn converse_stream() -> Vec<u8> {
    let mut body = frame("messageStart", r#"{"role":"assistant","p":"abcdefgh"}"#);
    for i in 0..DELTAS {
        body.extend(frame(
            "contentBlockDelta",
            &format!(r#"{{"contentBlockIndex":0,"delta":{{"text":" word{i}"}},"p":"abcd"}}"#),
        ));
    }
    body.extend(frame("contentBlockStop", r#"{"contentBlockIndex":0}"#));
    body.extend(frame("messageStop", r#"{"stopReason":"end_turn"}"#));
    body.extend(frame(
        "metadata",
        r#"{"usage":{"inputTokens":10,"outputTokens":10000,"totalTokens":10010},"metrics":{"latencyMs":1}}"#,
    ));
    body
}

fn anthropic_stream() -> Vec<u8> {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    for i in 0..DELTAS {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        ));
    }
    s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":10000}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

/// Feeds the body in 16 KiB reads, as a socket would deliver it, and encodes for the client.
fn translate(wire: Wire, body: &[u8]) -> usize {
    let mut decoder = wire.stream_decoder("m", spillway_dataplane::protocol::DEFAULT_MAX_FRAME);
    let mut encoder = stream_encoder(Protocol::OpenAi, true);
    let mut events = Vec::with_capacity(256);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut written = 0;
    for chunk in body.chunks(16 * 1024) {
        decoder.feed(chunk, &mut events).expect("valid stream");
        for e in events.drain(..) {
            encoder.encode(&e, &mut out);
        }
        written += out.len();
        out.clear();
    }
    written
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_to_openai_sse");
    g.throughput(Throughput::Elements(DELTAS as u64));
    let converse = converse_stream();
    g.bench_function("bedrock_eventstream", |b| b.iter(|| translate(Wire::BedrockConverse, black_box(&converse))));
    let anthropic = anthropic_stream();
    g.bench_function("anthropic_sse", |b| b.iter(|| translate(Wire::Anthropic, black_box(&anthropic))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
