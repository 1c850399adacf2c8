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
    /// System instructions, one text part per block the client sent, with cache points.
    pub system: Vec<Part>,
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
    /// The answer must be JSON (OpenAI `response_format`, Anthropic `output_config.format`).
    pub format: Option<OutputFormat>,
    /// The model is to reason before answering (OpenAI `reasoning_effort`, Anthropic
    /// `thinking` and `output_config.effort`).
    pub reasoning: Option<Reasoning>,
    /// Fields of the client's request this form does not carry, as the client spelt them.
    pub unrepresented: Vec<Unrepresented>,
    /// Responses API tool namespaces: their tools are named `{namespace}__{tool}` here (one
    /// flat list, as every other protocol has), and split again in the reply.
    pub namespaces: Vec<String>,
}

/// Joins a namespace and a tool name into the flat name other protocols see.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// How much to reason: a token budget, an effort level, both, or neither (the model decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reasoning {
    pub budget_tokens: Option<u64>,
    pub effort: Option<Effort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
    XHigh,
    Max,
}

impl Effort {
    /// As OpenAI, Anthropic and Converse spell it (lower case).
    pub fn parse(s: &str) -> Option<Effort> {
        Some(match s {
            "minimal" => Effort::Minimal,
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            "xhigh" => Effort::XHigh,
            "max" => Effort::Max,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::XHigh => "xhigh",
            Effort::Max => "max",
        }
    }

    /// The level a token budget amounts to, for a provider that takes only levels.
    pub fn of_budget(budget: u64) -> Effort {
        match budget {
            ..2048 => Effort::Low,
            2048..16384 => Effort::Medium,
            _ => Effort::High,
        }
    }

    /// The budget a level amounts to, for a provider that takes only budgets.
    pub fn budget(self) -> u64 {
        match self {
            Effort::Minimal | Effort::Low => 1024,
            Effort::Medium => 4096,
            Effort::High => 16384,
            Effort::XHigh | Effort::Max => 32768,
        }
    }
}

impl Reasoning {
    /// The effort level to send a provider that takes only levels.
    pub fn level(&self) -> Effort {
        self.effort.or(self.budget_tokens.map(Effort::of_budget)).unwrap_or(Effort::Medium)
    }
}

/// A required shape for the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// JSON that matches `schema`.
    JsonSchema { name: String, schema: Value, strict: bool },
}

impl OutputFormat {
    /// The schema the answer must match: any object, for [`OutputFormat::JsonObject`].
    pub fn schema(&self) -> Value {
        match self {
            OutputFormat::JsonObject => serde_json::json!({"type": "object"}),
            OutputFormat::JsonSchema { schema, .. } => schema.clone(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            OutputFormat::JsonObject => "output",
            OutputFormat::JsonSchema { name, .. } => name,
        }
    }
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
    /// The model's reasoning before its answer, with the provider's signature that lets it be
    /// handed back in a later turn (Anthropic `thinking`, Converse `reasoningContent`, Gemini
    /// thought parts). Unsigned reasoning cannot be handed back to a provider that checks it.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    /// Reasoning the provider returned encrypted (Anthropic `redacted_thinking`, Converse
    /// `redactedContent`), kept only to be handed back.
    RedactedThinking(String),
    /// A document (a PDF, a spreadsheet, text) given inline, base64-encoded.
    Document {
        media_type: String,
        data: String,
        /// Its file name, where the client gave one.
        name: Option<String>,
    },
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
    /// The prompt up to and including the part before is to be cached (Anthropic
    /// `cache_control` on that block, a Converse `cachePoint` block after it).
    CachePoint(Cache),
}

/// A prompt-cache breakpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cache {
    /// How long the entry lives, as the providers spell it (`5m`, `1h`); `None`: their default.
    pub ttl: Option<String>,
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
    /// Calls must match the schema exactly (OpenAI `function.strict`, Anthropic and Converse
    /// `strict`).
    pub strict: bool,
    /// The tool definitions up to this one are to be cached.
    pub cache: Option<Cache>,
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

/// Token counts, in Anthropic's sense of each: the providers count the same things in
/// different fields, and each protocol module converts (OpenAI's `prompt_tokens` and Gemini's
/// `promptTokenCount` include cached tokens; Gemini's `candidatesTokenCount` leaves out thinking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Input tokens read neither from nor into the prompt cache.
    pub input_tokens: u64,
    /// All output tokens, reasoning included.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// The share of `output_tokens` spent reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Every input token, cached or not (OpenAI's `prompt_tokens`).
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    /// Every token the request cost the provider, for capacity accounting.
    pub fn total(&self) -> u64 {
        self.prompt_tokens() + self.output_tokens
    }

    /// The tokens a passed-through `usage` object reports (see [`Reported`]).
    pub fn reported(u: &serde_json::Map<String, Value>) -> Usage {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        let details = |k: &str| {
            u.get(k).map(|d| Details {
                cached_tokens: d.get("cached_tokens").and_then(Value::as_u64),
                cache_write_tokens: d.get("cache_write_tokens").and_then(Value::as_u64),
                reasoning_tokens: d.get("reasoning_tokens").and_then(Value::as_u64),
            })
        };
        Reported {
            prompt_tokens: get("prompt_tokens"),
            completion_tokens: get("completion_tokens"),
            input_tokens: get("input_tokens"),
            output_tokens: get("output_tokens"),
            cache_read_input_tokens: get("cache_read_input_tokens"),
            cache_creation_input_tokens: get("cache_creation_input_tokens"),
            prompt_tokens_details: details("prompt_tokens_details"),
            completion_tokens_details: details("completion_tokens_details"),
            input_tokens_details: details("input_tokens_details"),
            output_tokens_details: details("output_tokens_details"),
        }
        .usage()
    }
}

/// A `usage` object as a provider reports it, in OpenAI Chat Completions' spelling
/// (`prompt_tokens`, `completion_tokens`, their details), the Responses API's (`input_tokens`
/// counting cached tokens, named in `input_tokens_details`) or Anthropic's (`input_tokens`,
/// `output_tokens`, `cache_*_input_tokens`). Read straight from a passed-through reply, without
/// building a JSON tree.
/// Counts of another type than a whole number, and fields of another type than an object, are
/// read as absent: a reply is never refused for the shape of its usage.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Reported {
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    completion_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "object")]
    prompt_tokens_details: Option<Details>,
    #[serde(default, deserialize_with = "object")]
    completion_tokens_details: Option<Details>,
    #[serde(default, deserialize_with = "object")]
    input_tokens_details: Option<Details>,
    #[serde(default, deserialize_with = "object")]
    output_tokens_details: Option<Details>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Details {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    cache_write_tokens: Option<u64>,
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: Option<u64>,
}

/// A whole, non-negative number; anything else is absent.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde::Deserialize::deserialize(d)? {
        Lenient::Count(n) => Some(n),
        Lenient::Other(_) => None,
    })
}

/// An object of type `T`; anything else is absent.
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Visit<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(Visit(std::marker::PhantomData))
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Lenient {
    Count(u64),
    Other(serde::de::IgnoredAny),
}

impl Reported {
    /// The counts in Anthropic's sense of each.
    pub fn usage(&self) -> Usage {
        let n = |v: Option<u64>| v.unwrap_or(0);
        let detail = |d: &Option<Details>, f: fn(&Details) -> Option<u64>| d.as_ref().and_then(f).unwrap_or(0);
        if self.prompt_tokens.is_some() || self.completion_tokens.is_some() {
            let cached = detail(&self.prompt_tokens_details, |d| d.cached_tokens);
            Usage {
                input_tokens: n(self.prompt_tokens).saturating_sub(cached),
                output_tokens: n(self.completion_tokens),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
                reasoning_tokens: detail(&self.completion_tokens_details, |d| d.reasoning_tokens),
            }
        } else if self.input_tokens_details.is_some() || self.output_tokens_details.is_some() {
            let cached = detail(&self.input_tokens_details, |d| d.cached_tokens);
            let written = detail(&self.input_tokens_details, |d| d.cache_write_tokens);
            Usage {
                input_tokens: n(self.input_tokens).saturating_sub(cached + written),
                output_tokens: n(self.output_tokens),
                cache_read_tokens: cached,
                cache_write_tokens: written,
                reasoning_tokens: detail(&self.output_tokens_details, |d| d.reasoning_tokens),
            }
        } else {
            Usage {
                input_tokens: n(self.input_tokens),
                output_tokens: n(self.output_tokens),
                cache_read_tokens: n(self.cache_read_input_tokens),
                cache_write_tokens: n(self.cache_creation_input_tokens),
                reasoning_tokens: 0,
            }
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
    /// A fragment of the model's reasoning.
    Thinking(String),
    /// The signature of the reasoning streamed so far, which ends it.
    ThinkingSignature(String),
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
        let take = |mine: &mut u64, theirs: u64| {
            if theirs > 0 {
                *mine = theirs;
            }
        };
        take(&mut self.input_tokens, later.input_tokens);
        take(&mut self.output_tokens, later.output_tokens);
        take(&mut self.cache_read_tokens, later.cache_read_tokens);
        take(&mut self.cache_write_tokens, later.cache_write_tokens);
        take(&mut self.reasoning_tokens, later.reasoning_tokens);
    }
}

impl Part {
    /// Whether the part can be handed back to a provider in a later turn: reasoning only with
    /// the signature that proves it the provider's own.
    pub fn can_be_handed_back(&self) -> bool {
        !matches!(self, Part::Thinking { signature: None, .. })
    }
}

impl Request {
    /// Whether the client asked for prompt caching anywhere.
    pub fn caches(&self) -> bool {
        let point = |p: &Part| matches!(p, Part::CachePoint(_));
        self.system.iter().any(point)
            || self.messages.iter().flat_map(|m| &m.content).any(point)
            || self.tools.iter().any(|t| t.cache.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_read_straight_from_a_reply_matches_usage_read_from_its_tree_and_never_refuses_it() {
        let cases = [
            r#"{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}"#,
            r#"{"input_tokens":10,"output_tokens":5,"input_tokens_details":{"cached_tokens":3,"cache_write_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}"#,
            r#"{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":7,"cache_creation_input_tokens":1}"#,
            r#"{"prompt_tokens":10.5,"completion_tokens":-1,"prompt_tokens_details":[1],"extra":{"a":[1,2]}}"#,
        ];
        for text in cases {
            let tree: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
            let direct: Reported = serde_json::from_str(text).unwrap();
            assert_eq!(direct.usage(), Usage::reported(&tree), "{text}");
        }
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(default, deserialize_with = "object")]
            usage: Option<Reported>,
        }
        for odd in [r#"{"usage":7}"#, r#"{"usage":null}"#, r#"{"usage":"n/a"}"#, r#"{"usage":[1]}"#, "{}"] {
            assert!(serde_json::from_str::<Reply>(odd).unwrap().usage.is_none(), "{odd}");
        }
    }
}
