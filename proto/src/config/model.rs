//! The config model of docs/design.md §2. Unknown keys are errors (`deny_unknown_fields`) so a typo
//! never silently falls back to a default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub features: BTreeMap<String, Feature>,
    #[serde(default)]
    pub breakers: BTreeMap<String, BreakerPolicy>,
    /// Caps attempts at failing endpoints sidecar-wide, so an outage cannot multiply upstream load.
    #[serde(default)]
    pub retry_budget: RetryBudget,
}

/// Retries aimed at a *failing* endpoint — one that is OPEN or PARTIAL-OPEN, or failed in the last
/// second — may be at most `ratio` of the requests of the last `window_s` seconds, but
/// `min_per_s` are always allowed so a quiet sidecar can still probe. Fallback to a healthy tier
/// and capacity spillover are never budgeted: they add no load to anything that is failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "default_budget_ratio")]
    pub ratio: f64,
    #[serde(default = "default_budget_min")]
    pub min_per_s: u32,
    #[serde(default = "default_budget_window")]
    pub window_s: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: default_budget_ratio(),
            min_per_s: default_budget_min(),
            window_s: default_budget_window(),
        }
    }
}

fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min() -> u32 {
    3
}
fn default_budget_window() -> u32 {
    10
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    OpenaiCompatible,
    Anthropic,
    Bedrock,
    Vertex,
    AzureOpenai,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::OpenaiCompatible => "openai_compatible",
            Provider::Anthropic => "anthropic",
            Provider::Bedrock => "bedrock",
            Provider::Vertex => "vertex",
            Provider::AzureOpenai => "azure_openai",
        }
    }
}

/// One concrete model at one provider, in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub provider: Provider,
    /// Cloud region (`us-east-1`, `europe-west4`) or a region group (`us`, `eu`) for providers
    /// that do not expose regions. Needed whenever a feature using the endpoint has a boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The provider's model id (for Bedrock also an ARN or inference profile id).
    pub model: String,
    /// Provider API flavour: bedrock `converse | invoke`, vertex `gemini | anthropic`,
    /// openai_compatible `chat | responses` (`responses`: the server also speaks the Responses
    /// API, so Responses callers are passed through to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Base URL up to and including the version prefix, e.g. `https://api.openai.com/v1`.
    /// Required for `openai_compatible`; overrides the provider default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Provider API version: azure_openai's `api-version` query parameter, anthropic's
    /// `anthropic-version` header (a client's own header wins on pass-through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// GCP project (vertex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Extra headers sent on every request to this endpoint (e.g. `OpenAI-Project`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// TCP + TLS connect timeout; a connect that takes longer moves on to the next tier.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The size of the vectors this endpoint's model embeds into (embedding models only).
    /// Vectors of different models cannot be compared, so every endpoint of a hierarchy that
    /// declares a size must declare the same one, and a reply of another size is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

/// Where an endpoint's credentials come from. Secrets themselves never appear in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(schema_with = "auth_schema")]
pub enum Auth {
    /// No credentials (self-hosted models on a trusted network).
    None,
    /// A static API key read from an environment variable or a file (re-read when it changes).
    ApiKey {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
    },
    /// A bearer token (an Azure Entra ID token, a gateway's token) read from an environment
    /// variable or a file, sent as `Authorization: Bearer`.
    BearerToken {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
    },
    /// The AWS default chain: env, web identity (IRSA), container credentials, IMDSv2.
    AwsDefault,
    /// The GCP default chain: metadata server, service-account key, external account.
    GcpDefault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// The provisioned-throughput pool this endpoint draws from.
    pub pool: String,
    /// The on-demand twin that takes the overflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_to: Option<String>,
}

/// Provisioned throughput, in model units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub model_units: u32,
    pub tokens_per_minute_per_unit: u64,
    #[serde(default = "default_spill_at")]
    pub spill_at_utilisation: f64,
}

impl Pool {
    /// The pool's whole capacity: what a standalone sidecar owns and the control plane divides.
    pub fn tokens_per_minute(&self) -> u64 {
        u64::from(self.model_units) * self.tokens_per_minute_per_unit
    }
}

fn default_spill_at() -> f64 {
    0.95
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureClass {
    /// Latency-sensitive: provisioned throughput first.
    #[default]
    Interactive,
    /// Throughput work: on-demand first, never consumes provisioned throughput.
    Batch,
}

/// What a translation to another provider's API may leave out of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Translation {
    /// A field that only tunes the answer (a seed, a penalty, a sampling knob) and that the
    /// endpoint cannot carry is dropped, and named in the reply's `x-spillway-dropped` header.
    #[default]
    Lenient,
    /// An endpoint that cannot carry every field of the request is skipped for it, as for a
    /// field that changes what the answer is.
    Strict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    #[serde(default)]
    pub class: FeatureClass,
    /// What a translation to another provider's API may leave out (see [`Translation`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub translation: Translation,
    /// Region groups (`us`, `eu`, …) the feature's data may go to; empty = unrestricted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundary: Vec<String>,
    /// Endpoint names, primary first.
    pub hierarchy: Vec<String>,
    /// Named breaker policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Bound on the whole request, all attempts and the streamed response included.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Bound on one attempt until its first byte (response head, and for a stream its first
    /// event). When it passes, the attempt is abandoned and the next tier tried. Unset: only the
    /// deadline bounds an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout_ms: Option<u64>,
    /// Race the next tier when the first token is late: milliseconds, or a percentile (`p90`)
    /// of the endpoint's own recent first-token times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after_ttft_ms: Option<HedgeAfter>,
    /// Hedge turns that carry tool results too. Off by default: a tool-result turn may be the
    /// step that makes the model act, and two models acting on it is not what callers expect.
    #[serde(default)]
    pub hedge_tool_results: bool,
    /// Hedges racing at once may be at most this share of the feature's requests in flight (at
    /// least one is always allowed), so a slow primary cannot double the feature's load.
    #[serde(default = "default_hedge_max_share")]
    pub hedge_max_share: f64,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_hedge_max_share() -> f64 {
    0.1
}

fn default_deadline_ms() -> u64 {
    300_000
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(schema_with = "int_or_string")]
pub enum HedgeAfter {
    Millis(u64),
    /// `p50` … `p99`: the endpoint's own observed TTFT percentile.
    Percentile(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerPolicy {
    #[serde(default = "default_window_s")]
    pub window_s: u32,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_error_rate")]
    pub error_rate: f64,
    /// Judged on streaming attempts only: a whole reply has no first token of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_ttft: Option<SlowRule>,
    /// Judged on non-streaming attempts and on whole streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_total: Option<SlowRule>,
    /// Time per output token after the first (streams) or per output token (whole replies), so a
    /// long answer is not slow for being long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_tpot: Option<SlowRule>,
    /// Opens the endpoint after this many attempts in a row failed or were slow by one of the
    /// slow rules, whatever the volume: a dead endpoint opens in N requests, not a window's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default = "default_open_for_s")]
    pub open_for_s: u32,
    #[serde(default)]
    pub ramp: Ramp,
}

fn default_window_s() -> u32 {
    30
}
fn default_min_requests() -> u32 {
    20
}
fn default_error_rate() -> f64 {
    0.2
}
fn default_open_for_s() -> u32 {
    30
}

/// "More than `rate` of requests slower than `over_ms`" — a percentile trip without a percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowRule {
    pub over_ms: u64,
    pub rate: f64,
}

/// The PARTIAL-OPEN ramp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    #[serde(default = "default_ramp_start")]
    pub start: f64,
    #[serde(default = "default_ramp_factor")]
    pub factor: f64,
    #[serde(default = "default_ramp_step_s")]
    pub step_s: u32,
    #[serde(default = "default_ramp_max_s")]
    pub max_s: u32,
}

impl Default for Ramp {
    fn default() -> Self {
        Ramp {
            start: default_ramp_start(),
            factor: default_ramp_factor(),
            step_s: default_ramp_step_s(),
            max_s: default_ramp_max_s(),
        }
    }
}

fn default_ramp_start() -> f64 {
    0.05
}
fn default_ramp_factor() -> f64 {
    2.0
}
fn default_ramp_step_s() -> u32 {
    10
}
fn default_ramp_max_s() -> u32 {
    300
}

/// A number of milliseconds or a percentile name, in the form Kubernetes accepts in a structural
/// schema (`anyOf` of two types is refused there).
fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-int-or-string": true })
}

/// `Auth` as one object whose `kind` names the source: a structural schema cannot give one
/// property a different schema per variant. Which fields a kind takes is checked by the loader.
fn auth_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Where an endpoint's credentials come from: kind none | api_key | bearer_token (with env or file) | aws_default | gcp_default.",
        "required": ["kind"],
        "properties": {
            "kind": { "type": "string", "enum": ["none", "api_key", "bearer_token", "aws_default", "gcp_default"] },
            "env": { "type": "string", "description": "The environment variable holding the secret." },
            "file": { "type": "string", "description": "The file holding the secret (re-read when it changes)." }
        }
    })
}
