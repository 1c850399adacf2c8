//! The config is strict and explains itself: every problem names the file, the path inside the
//! document and what is wrong, and all of them are reported at once.

use spillway_api::config::{ConfigErrors, load_str};

fn errors(yaml: &str) -> Vec<String> {
    match load_str(yaml, "routing.yaml") {
        Ok(_) => panic!("config should have been rejected:\n{yaml}"),
        Err(ConfigErrors(list)) => list.iter().map(ToString::to_string).collect(),
    }
}

fn has(errors: &[String], needle: &str) -> bool {
    errors.iter().any(|e| e.contains(needle))
}

const DESIGN_EXAMPLE: &str = r#"
endpoints:
  sonnet-bedrock-use1-pt:
    provider: bedrock
    region: us-east-1
    model: "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
    api: converse
    auth: { kind: aws_default }
    capacity: { pool: sonnet-pt, spill_to: sonnet-bedrock-use1-od }
  sonnet-bedrock-use1-od: { provider: bedrock, region: us-east-1, model: us.anthropic.claude-sonnet-4-5-v1:0 }
  sonnet-vertex-use5:    { provider: vertex, region: us-east5, project: acme-ai, api: anthropic, model: claude-sonnet-4-5 }
  haiku-bedrock-use1-od: { provider: bedrock, region: us-east-1, model: us.anthropic.claude-haiku-4-5-v1:0 }
pools:
  sonnet-pt: { model_units: 4, tokens_per_minute_per_unit: 60000, spill_at_utilisation: 0.95 }
features:
  ai_search:
    class: interactive
    boundary: [us]
    hierarchy: [sonnet-bedrock-use1-pt, sonnet-vertex-use5, haiku-bedrock-use1-od]
    breaker: interactive
    deadline_ms: 60000
    hedge_after_ttft_ms: p90
  recap: { class: batch, boundary: [us], hierarchy: [sonnet-bedrock-use1-od, sonnet-vertex-use5] }
breakers:
  interactive:
    window_s: 30
    min_requests: 20
    error_rate: 0.2
    slow_ttft: { over_ms: 2000, rate: 0.10 }
    slow_total: { over_ms: 20000, rate: 0.10 }
    open_for_s: 30
    ramp: { start: 0.05, factor: 2, step_s: 10, max_s: 300 }
"#;

#[test]
fn the_design_example_is_valid() {
    let c = load_str(DESIGN_EXAMPLE, "design.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.features["ai_search"].hierarchy.len(), 3);
    assert_eq!(c.breakers["interactive"].ramp.step_s, 10);
    assert_eq!(c.features["recap"].deadline_ms, 300_000, "default deadline");
}

#[test]
fn type_errors_carry_the_path_and_the_file() {
    let e = errors(
        "endpoints:\n  a: { provider: openai, model: m, connect_timeout_ms: soon }\nfeatures:\n  f: { hierarchy: [a] }\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("routing.yaml: endpoints.a.connect_timeout_ms:"), "{e:?}");
}

#[test]
fn unknown_keys_are_errors_not_silent_defaults() {
    let e = errors("features:\n  f: { hierarchy: [a], deadline: 5 }\n");
    assert!(has(&e, "features.f") && has(&e, "deadline"), "{e:?}");
    let e = errors("endpoints:\n  a: { provider: openai, model: m, auth: { kind: api_key, environment: X } }\n");
    assert!(has(&e, "endpoints.a.auth"), "{e:?}");
    let e = errors("endpoints:\n  a: { provider: openia, model: m }\n");
    assert!(has(&e, "endpoints.a.provider") && has(&e, "openia"), "{e:?}");
}

#[test]
fn dangling_references_are_named_with_their_index() {
    let e = errors(
        r#"
endpoints:
  a: { provider: openai, model: m }
features:
  f: { hierarchy: [a, b, a], breaker: strict }
"#,
    );
    assert!(has(&e, "routing.yaml: features.f.hierarchy[1]: unknown endpoint `b` (known endpoints: a)"), "{e:?}");
    assert!(has(&e, "features.f.hierarchy[2]: endpoint `a` is listed twice"), "{e:?}");
    assert!(has(&e, "features.f.breaker: unknown breaker policy `strict`"), "{e:?}");
    assert_eq!(e.len(), 3, "all problems at once: {e:?}");
}

#[test]
fn spill_cycles_unused_pools_and_unknown_pools_are_rejected() {
    let e = errors(
        r#"
endpoints:
  a: { provider: openai, model: m, capacity: { pool: p, spill_to: b } }
  b: { provider: openai, model: m, capacity: { pool: p, spill_to: a } }
  c: { provider: openai, model: m, capacity: { pool: nope } }
pools:
  p: { model_units: 1, tokens_per_minute_per_unit: 1000 }
  idle: { model_units: 1, tokens_per_minute_per_unit: 1000 }
features:
  f: { hierarchy: [a] }
"#,
    );
    assert!(has(&e, "endpoints.a.capacity.spill_to: spill_to forms a cycle"), "{e:?}");
    assert!(has(&e, "endpoints.c.capacity.pool: unknown pool `nope`"), "{e:?}");
    assert!(has(&e, "pools.idle: no endpoint draws from this pool"), "{e:?}");
}

#[test]
fn a_hierarchy_or_spill_to_leaving_the_boundary_is_rejected() {
    let e = errors(
        r#"
endpoints:
  eu-pt: { provider: bedrock, region: eu-central-1, model: m, capacity: { pool: p, spill_to: us-od } }
  us-od: { provider: bedrock, region: us-east-1, model: m }
  eu-gemini: { provider: vertex, region: europe-west4, project: x, model: g }
  openai: { provider: openai, model: gpt-4o }
pools:
  p: { model_units: 1, tokens_per_minute_per_unit: 1000 }
features:
  f: { boundary: [eu], hierarchy: [eu-pt, eu-gemini, openai] }
"#,
    );
    assert!(
        has(&e, "features.f.hierarchy[0] (spill_to of `eu-pt`): endpoint `us-od` is in region `us-east-1` (group us)"),
        "{e:?}"
    );
    assert!(has(&e, "features.f.hierarchy[2]: endpoint `openai` has no region"), "{e:?}");
    assert!(!has(&e, "eu-gemini"), "europe-west4 is inside eu: {e:?}");
}

#[test]
fn provider_specific_requirements() {
    let e = errors(
        r#"
endpoints:
  local: { provider: openai_compatible, model: llama }
  vx: { provider: vertex, model: g, api: converse }
  br: { provider: bedrock, model: m, auth: { kind: gcp_default } }
  bad-url: { provider: openai_compatible, model: m, base_url: "ftp://x" }
  key: { provider: openai, model: m, auth: { kind: api_key } }
  hdr: { provider: openai, model: m, headers: { Authorization: "Bearer x" } }
features:
  f: { hierarchy: [local] }
"#,
    );
    for needle in [
        "endpoints.local.base_url: is required for provider openai_compatible",
        "endpoints.vx.region: is required",
        "endpoints.vx.project: is required",
        "endpoints.vx.api: `converse` is not an API of vertex",
        "endpoints.br.auth.kind: gcp_default only applies to vertex",
        "endpoints.bad-url.base_url",
        "endpoints.key.auth: api_key needs exactly one of `env` or `file`",
        "endpoints.hdr.headers.Authorization: is set by spillway itself",
    ] {
        assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
    }
}

#[test]
fn ranges_are_checked() {
    let e = errors(
        r#"
endpoints:
  a: { provider: openai, model: m }
features:
  f: { hierarchy: [a], deadline_ms: 1000, attempt_timeout_ms: 5000, hedge_after_ttft_ms: soon }
breakers:
  b: { error_rate: 1.5, ramp: { factor: 1, start: 0 } }
"#,
    );
    for needle in [
        "features.f.attempt_timeout_ms: is 5000; must be in 1..=1000",
        "features.f.hedge_after_ttft_ms: `soon`",
        "breakers.b.error_rate: is 1.5; must be in (0, 1]",
        "breakers.b.ramp.factor",
        "breakers.b.ramp.start",
    ] {
        assert!(has(&e, needle), "missing {needle:?} in {e:#?}");
    }
}

#[test]
fn empty_and_broken_documents_say_so() {
    assert!(has(&errors(""), "the file is empty"));
    let e = errors("features: [unclosed\n");
    assert!(e[0].starts_with("routing.yaml: "), "{e:?}");
    assert!(has(&errors("endpoints: {}\n"), "features: no features are defined"));
}

#[test]
fn an_endpoint_has_one_breaker_policy() {
    let e = errors(
        r#"
endpoints:
  a: { provider: openai, model: m }
features:
  f: { hierarchy: [a], breaker: strict }
  g: { hierarchy: [a], breaker: lenient }
breakers:
  strict: { error_rate: 0.1 }
  lenient: { error_rate: 0.5 }
"#,
    );
    assert!(has(&e, "endpoints.a: is used by features with different breaker policies (lenient, strict)"), "{e:?}");
}

#[test]
fn an_embedding_feature_cannot_mix_vector_sizes() {
    let yaml = r#"
endpoints:
  titan: { provider: bedrock, region: us-east-1, model: amazon.titan-embed-text-v2:0, dimensions: 1024 }
  gecko: { provider: vertex, region: us-central1, project: p, model: text-embedding-005, dimensions: 768 }
  small: { provider: openai, model: text-embedding-3-small }
  large: { provider: openai, model: text-embedding-3-large, dimensions: 1024 }
features:
  mixed: { hierarchy: [titan, gecko] }
  undeclared: { hierarchy: [large, small] }
"#;
    let e = errors(yaml);
    assert!(
        has(&e, "features.mixed.hierarchy[1]: endpoint `gecko` embeds into 768 dimensions but `titan` into 1024"),
        "{e:?}"
    );
    assert!(has(&e, "features.undeclared.hierarchy[1]: endpoint `small` declares no `dimensions`"), "{e:?}");
    let fine = yaml
        .replace("dimensions: 768", "dimensions: 1024")
        .replace("model: text-embedding-3-small", "model: text-embedding-3-small, dimensions: 1024");
    load_str(&fine, "routing.yaml").unwrap_or_else(|e| panic!("{e}"));
}
