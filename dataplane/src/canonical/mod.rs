//! The canonical request, response and stream events every protocol translates through.
//!
//! Only cross-protocol pairs use it (an OpenAI client on an Anthropic endpoint, say). When the
//! client and the endpoint speak the same protocol the body is passed through untouched, so
//! fields this model does not know still reach the provider.
//!
//! The shapes follow Anthropic's more structured model (system prompt apart, tool results as
//! parts of a user turn, tool input as a JSON object); OpenAI's maps onto it without loss for
//! everything a router must carry: text, images, tools, tool calls and results, sampling, limits.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// Parallel tool calls explicitly disabled.
    pub no_parallel_tools: bool,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client asked for usage in the stream (OpenAI `stream_options.include_usage`).
    pub include_usage: bool,
    /// End-user id for abuse tracking (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Fields of the client's request this form does not carry, as the client spelt them.
    pub unrepresented: Vec<Unrepresented>,
}

/// A field of a client's request that a translation cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrepresented {
    /// The field's name in the client's request (a top-level key, or one the wire has no
    /// place for, like `top_k`).
    pub field: String,
    pub loss: Loss,
}

/// What dropping a field costs the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// It only tunes the answer (a seed, a penalty, a sampling knob): dropped and reported in
    /// `x-spillway-dropped`, unless the feature translates strictly.
    Tuning,
    /// It changes what the answer is (several choices, log-probabilities, audio): an endpoint
    /// that cannot carry it cannot serve the request, and the next one is tried.
    Meaning,
}

impl Unrepresented {
    pub fn tuning(field: &str) -> Self {
        Unrepresented { field: field.to_owned(), loss: Loss::Tuning }
    }

    pub fn meaning(field: &str) -> Self {
        Unrepresented { field: field.to_owned(), loss: Loss::Meaning }
    }
}

/// The top-level fields of `body` outside `carried`, each as `classify` judges its value
/// (`None`: a value that asks for nothing, like `n: 1`). Names are the client's, so only those
/// that look like field names are kept, and at most a few: they end up in a response header.
pub fn unrepresented(
    body: &serde_json::Map<String, Value>,
    carried: &[&str],
    classify: impl Fn(&str, &Value) -> Option<Loss>,
) -> Vec<Unrepresented> {
    const MAX: usize = 16;
    let looks_like_a_field =
        |k: &str| k.len() <= 64 && !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    body.iter()
        .filter(|(k, v)| !carried.contains(&k.as_str()) && !v.is_null() && looks_like_a_field(k))
        .filter_map(|(k, v)| classify(k, v).map(|loss| Unrepresented { field: k.clone(), loss }))
        .take(MAX)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A call the assistant made; `input` is a JSON object.
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// The caller's answer to a call, inside a user turn.
    ToolResult {
        tool_use_id: String,
        content: Vec<Part>,
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the input object.
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    /// Must call some tool (OpenAI `required`, Anthropic `any`).
    Any,
    None,
    Tool(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    /// Refused or filtered by the provider's safety system.
    Refusal,
    /// The prompt plus output did not fit the model's window.
    ContextWindow,
    /// A reason this model does not know, kept verbatim.
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// The tokens a passed-through `usage` object reports, in OpenAI's spelling
    /// (`prompt_tokens`, `completion_tokens`) or Anthropic's (`input_tokens`, `output_tokens`).
    pub fn reported(u: &serde_json::Map<String, Value>) -> Usage {
        let get = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        Usage {
            input_tokens: get("prompt_tokens").max(get("input_tokens")),
            output_tokens: get("completion_tokens").max(get("output_tokens")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub model: String,
    pub content: Vec<Part>,
    pub stop: StopReason,
    pub usage: Usage,
}

/// One step of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A tool call begins; `index` counts tool calls in this reply from 0.
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of the current call's JSON input.
    ToolArgs {
        index: usize,
        fragment: String,
    },
    /// Token counts so far; later values replace earlier ones field by field when non-zero.
    Usage(Usage),
    Stop(StopReason),
    /// The provider reported a failure inside the stream.
    Error {
        overloaded: bool,
        message: String,
    },
    /// The provider's own end-of-stream marker.
    End,
}

impl Usage {
    /// Merges a later report: providers send input and output counts at different points.
    pub fn merge(&mut self, later: Usage) {
        if later.input_tokens > 0 {
            self.input_tokens = later.input_tokens;
        }
        if later.output_tokens > 0 {
            self.output_tokens = later.output_tokens;
        }
    }
}

/// Text of the text parts, joined.
pub fn text_of(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}
