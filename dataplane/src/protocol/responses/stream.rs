//! Responses streams: typed events (`response.created`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, …, `response.completed`) read into canonical events
//! and written from them, every event numbered by `sequence_number`.

use super::{call_item, flat_name, reasoning_item, reply_item_id, response_object, status_of, stop_from};
use crate::canonical::{Event, StopReason, Usage};
use crate::protocol::{SseEventDecoder, StreamEncoder, unix_now};
use crate::sse;
use bytes::BytesMut;
use serde_json::{Value, json};

/// Responses events → canonical events.
#[derive(Default)]
pub struct Decoder {
    /// Function calls begun so far; the current one is the last.
    calls: usize,
}

impl SseEventDecoder for Decoder {
    fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let Some(payload) = sse::data(event) else { return };
        let Ok(v) = serde_json::from_str::<Value>(&payload) else { return };
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "response.created" => out.push(Event::Start { id: s("/response/id"), model: s("/response/model") }),
            "response.output_text.delta" | "response.refusal.delta" => out.push(Event::Text(s("/delta"))),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                out.push(Event::Thinking(s("/delta")))
            }
            "response.output_item.added"
                if v.pointer("/item/type").and_then(Value::as_str) == Some("function_call") =>
            {
                let name = v.get("item").map(flat_name).unwrap_or_default();
                out.push(Event::ToolStart { index: self.calls, id: s("/item/call_id"), name });
                self.calls += 1;
            }
            "response.function_call_arguments.delta" => {
                out.push(Event::ToolArgs { index: self.calls.saturating_sub(1), fragment: s("/delta") })
            }
            "response.output_item.done" if v.pointer("/item/type").and_then(Value::as_str) == Some("reasoning") => {
                if let Some(sig) = v.pointer("/item/encrypted_content").and_then(Value::as_str) {
                    out.push(Event::ThinkingSignature(sig.to_owned()));
                }
            }
            "response.completed" | "response.incomplete" => {
                let r = v.get("response").unwrap_or(&Value::Null);
                if let Some(u) = r.get("usage").and_then(Value::as_object) {
                    out.push(Event::Usage(Usage::reported(u)));
                }
                out.push(Event::Stop(stop_from(r, self.calls > 0)));
                out.push(Event::End);
            }
            "response.failed" => out.push(Event::Error {
                overloaded: false,
                message: v
                    .pointer("/response/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the response failed")
                    .to_owned(),
            }),
            "error" => out.push(Event::Error {
                overloaded: matches!(
                    v.get("code").and_then(Value::as_str),
                    Some("rate_limit_exceeded" | "server_is_overloaded" | "slow_down")
                ),
                message: v.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_owned(),
            }),
            _ => {}
        }
    }
}

/// The output item being streamed.
enum Open {
    Message { id: String, text: String },
    Reasoning { id: String, text: String, signature: Option<String> },
    Call { id: String, call_id: String, name: String, args: String },
}

/// Canonical events → Responses events. The finished items are kept: `response.completed`
/// carries the whole response, as agent frameworks read it from there.
pub struct Encoder {
    seq: u64,
    id: String,
    model: String,
    created: u64,
    output: Vec<Value>,
    open: Option<Open>,
    stop: Option<StopReason>,
    usage: Usage,
    /// The caller's tool namespaces, to split flat tool names by.
    namespaces: Vec<String>,
}

impl Encoder {
    pub fn new(namespaces: Vec<String>) -> Self {
        Encoder {
            namespaces,
            seq: 0,
            id: reply_item_id("resp_"),
            model: String::new(),
            created: unix_now(),
            output: Vec::new(),
            open: None,
            stop: None,
            usage: Usage::default(),
        }
    }
}

impl Encoder {
    /// Writes `event: {type}` and its data, numbering it.
    fn emit(&mut self, kind: &str, mut data: Value, out: &mut BytesMut) {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    fn response(&self, status: &str, incomplete: Value, usage: Option<&Usage>) -> Value {
        response_object(&self.id, self.created, &self.model, status, incomplete, self.output.clone(), usage)
    }

    fn start_item(&mut self, open: Open, out: &mut BytesMut) {
        self.close(out);
        let i = self.index();
        match &open {
            Open::Message { id, .. } => {
                let item =
                    json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                self.emit("response.output_item.added", json!({"output_index": i, "item": item}), out);
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                self.emit(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}),
                    out,
                );
            }
            Open::Reasoning { id, .. } => {
                let item = json!({"type": "reasoning", "id": id, "summary": []});
                self.emit("response.output_item.added", json!({"output_index": i, "item": item}), out);
                let part = json!({"type": "summary_text", "text": ""});
                self.emit(
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": i, "summary_index": 0, "part": part}),
                    out,
                );
            }
            Open::Call { id, call_id, name, .. } => {
                let item = call_item(id, call_id, name, "", "in_progress", &self.namespaces);
                self.emit("response.output_item.added", json!({"output_index": i, "item": item}), out);
            }
        }
        self.open = Some(open);
    }

    fn close(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else { return };
        let i = self.index();
        let item = match open {
            Open::Message { id, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}),
                    out,
                );
                json!({"type": "message", "id": id, "status": "completed", "role": "assistant", "content": [part]})
            }
            Open::Reasoning { id, text, signature } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": i, "summary_index": 0, "text": text}),
                    out,
                );
                self.emit(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": i, "summary_index": 0, "part": part}),
                    out,
                );
                reasoning_item(&id, &text, signature.as_deref())
            }
            Open::Call { id, call_id, name, args } => {
                let item = call_item(&id, &call_id, &name, &args, "completed", &self.namespaces);
                let data = json!({"item_id": id, "output_index": i, "name": item["name"], "arguments": args});
                self.emit("response.function_call_arguments.done", data, out);
                item
            }
        };
        self.emit("response.output_item.done", json!({"output_index": i, "item": item}), out);
        self.output.push(item);
    }
}

impl StreamEncoder for Encoder {
    fn encode(&mut self, event: &Event, out: &mut BytesMut) {
        match event {
            Event::Start { id, model } => {
                self.id = crate::protocol::reply_id("resp_", id);
                self.model = model.clone();
                let r = self.response("in_progress", Value::Null, None);
                self.emit("response.created", json!({"response": r}), out);
                self.emit("response.in_progress", json!({"response": r}), out);
            }
            Event::Text(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.start_item(Open::Message { id: reply_item_id("msg_"), text: String::new() }, out);
                }
                let i = self.index();
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(t);
                    let data =
                        json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t, "logprobs": []});
                    self.emit("response.output_text.delta", data, out);
                }
            }
            Event::Thinking(t) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    let open = Open::Reasoning { id: reply_item_id("rs_"), text: String::new(), signature: None };
                    self.start_item(open, out);
                }
                let i = self.index();
                if let Some(Open::Reasoning { id, text, .. }) = &mut self.open {
                    text.push_str(t);
                    let data = json!({"item_id": id, "output_index": i, "summary_index": 0, "delta": t});
                    self.emit("response.reasoning_summary_text.delta", data, out);
                }
            }
            Event::ThinkingSignature(sig) => {
                if let Some(Open::Reasoning { signature, .. }) = &mut self.open {
                    signature.get_or_insert_with(String::new).push_str(sig);
                }
            }
            Event::ToolStart { id, name, .. } => {
                let open =
                    Open::Call { id: format!("fc_{id}"), call_id: id.clone(), name: name.clone(), args: String::new() };
                self.start_item(open, out);
            }
            Event::ToolArgs { fragment, .. } => {
                let i = self.index();
                if let Some(Open::Call { id, args, .. }) = &mut self.open {
                    args.push_str(fragment);
                    let data = json!({"item_id": id, "output_index": i, "delta": fragment});
                    self.emit("response.function_call_arguments.delta", data, out);
                }
            }
            Event::Usage(u) => self.usage.merge(*u),
            Event::Stop(r) => self.stop = Some(r.clone()),
            Event::Error { overloaded, message } => {
                let code = if *overloaded { "server_is_overloaded" } else { "server_error" };
                self.fail(*overloaded, code, message, out);
            }
            Event::End => {
                self.close(out);
                let reason = self.stop.take().unwrap_or(StopReason::EndTurn);
                let (status, incomplete) = status_of(&reason);
                let usage = self.usage;
                let kind = if incomplete.is_null() { "response.completed" } else { "response.incomplete" };
                let r = self.response(status, incomplete, Some(&usage));
                self.emit(kind, json!({"response": r}), out);
            }
        }
    }

    fn failure(&mut self, code: &str, message: &str, out: &mut BytesMut) {
        self.fail(false, code, message, out);
    }
}

impl Encoder {
    /// A stream that cannot finish: the `error` event, then `response.failed` with what was
    /// produced so far — the SDKs see a failed response, never one that just stops.
    fn fail(&mut self, overloaded: bool, code: &str, message: &str, out: &mut BytesMut) {
        self.emit("error", json!({"code": code, "message": message, "param": null}), out);
        let mut r = self.response("failed", Value::Null, Some(&self.usage.clone()));
        // The response's error code is one of the API's own; the event above carries ours.
        let kind = if overloaded { "rate_limit_exceeded" } else { "server_error" };
        r["error"] = json!({"code": kind, "message": message});
        self.emit("response.failed", json!({"response": r}), out);
    }
}
