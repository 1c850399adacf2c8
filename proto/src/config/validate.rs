//! Semantic checks that serde cannot express: references, cycles, ranges, boundaries.
//! Every problem is collected, so a user fixes a config in one pass rather than one error a run.

use super::bounds;
use super::region::{KNOWN_GROUPS, region_group};
use super::{Auth, ConfigError, ConfigErrors, Endpoint, HedgeAfter, Provider, RoutingConfig};
use std::collections::{BTreeSet, HashSet};

struct Problems<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigError { file: self.file.to_owned(), path: path.into(), message: message.into() });
    }
}

pub(super) fn validate(config: &RoutingConfig, file: &str) -> Result<(), ConfigErrors> {
    let mut p = Problems { file, list: Vec::new() };
    if config.features.is_empty() {
        p.add("features", "no features are defined; an application names a feature in every request");
    }
    for (name, endpoint) in &config.endpoints {
        check_endpoint(&mut p, config, name, endpoint);
    }
    check_spill_cycles(&mut p, config);
    for name in config.pools.keys() {
        let path = format!("pools.{name}");
        let used = config.endpoints.values().any(|e| e.capacity.as_ref().is_some_and(|c| &c.pool == name));
        if !used {
            p.add(path, "no endpoint draws from this pool (endpoints.<name>.capacity.pool)");
        }
    }
    for (name, feature) in &config.features {
        let path = format!("features.{name}");
        if feature.hierarchy.is_empty() {
            p.add(format!("{path}.hierarchy"), "must name at least one endpoint");
        }
        let mut seen = HashSet::new();
        for (i, ep) in feature.hierarchy.iter().enumerate() {
            let at = format!("{path}.hierarchy[{i}]");
            if !seen.insert(ep) {
                p.add(at, format!("endpoint `{ep}` is listed twice"));
            } else if !config.endpoints.contains_key(ep) {
                p.add(at, format!("unknown endpoint `{ep}`{}", known("endpoints", config.endpoints.keys())));
            }
        }
        if let Some(b) = &feature.breaker
            && !config.breakers.contains_key(b)
        {
            p.add(
                format!("{path}.breaker"),
                format!("unknown breaker policy `{b}`{}", known("policies", config.breakers.keys())),
            );
        }
        if let Some(HedgeAfter::Percentile(q)) = &feature.hedge_after_ttft_ms {
            let ok = q.strip_prefix('p').and_then(|n| n.parse::<u8>().ok()).is_some_and(|n| (1..=99).contains(&n));
            if !ok {
                p.add(
                    format!("{path}.hedge_after_ttft_ms"),
                    format!("`{q}` is neither milliseconds nor a percentile like p90"),
                );
            }
        }
        check_boundary(&mut p, config, name);
        check_dimensions(&mut p, config, name);
    }
    // A breaker is per endpoint, so every feature that names a policy must name the same one
    // for an endpoint they share.
    for name in config.endpoints.keys() {
        let policies: BTreeSet<&String> = config
            .features
            .values()
            .filter(|f| f.hierarchy.contains(name))
            .filter_map(|f| f.breaker.as_ref())
            .collect();
        if policies.len() > 1 {
            let list: Vec<&str> = policies.iter().map(|s| s.as_str()).collect();
            p.add(
                format!("endpoints.{name}"),
                format!(
                    "is used by features with different breaker policies ({}); an endpoint has one breaker",
                    list.join(", ")
                ),
            );
        }
    }
    for (path, message) in bounds::check(config) {
        p.add(path, message);
    }
    if p.list.is_empty() { Ok(()) } else { Err(ConfigErrors(p.list)) }
}

fn check_endpoint(p: &mut Problems, config: &RoutingConfig, name: &str, e: &Endpoint) {
    let path = format!("endpoints.{name}");
    if e.model.trim().is_empty() {
        p.add(format!("{path}.model"), "must not be empty");
    }
    match (&e.base_url, e.provider) {
        (None, Provider::OpenaiCompatible | Provider::AzureOpenai) => {
            p.add(format!("{path}.base_url"), format!("is required for provider {}", e.provider.as_str()));
        }
        (Some(url), _) => {
            let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && u.query().is_none()
            });
            if !ok {
                p.add(format!("{path}.base_url"), format!("`{url}` is not an http(s) URL without a query"));
            }
        }
        _ => {}
    }
    let api_ok = matches!(
        (e.provider, e.api.as_deref()),
        (_, None)
            | (Provider::Bedrock, Some("converse" | "invoke"))
            | (Provider::Vertex, Some("gemini" | "anthropic"))
            | (Provider::OpenaiCompatible, Some("chat" | "responses"))
    );
    if !api_ok {
        let expected = match e.provider {
            Provider::Bedrock => "converse or invoke",
            Provider::Vertex => "gemini or anthropic",
            Provider::OpenaiCompatible => "chat, or responses for a server that also speaks the Responses API",
            _ => "nothing (this provider has one API)",
        };
        p.add(
            format!("{path}.api"),
            format!(
                "`{}` is not an API of {}; expected {expected}",
                e.api.as_deref().unwrap_or_default(),
                e.provider.as_str()
            ),
        );
    }
    if matches!(e.provider, Provider::Bedrock | Provider::Vertex) && e.region.is_none() {
        p.add(format!("{path}.region"), format!("is required for provider {}", e.provider.as_str()));
    }
    if e.provider == Provider::Vertex && e.project.is_none() {
        p.add(format!("{path}.project"), "is required for provider vertex");
    }
    match (&e.auth, e.provider) {
        (Some(Auth::ApiKey { env, file }), _) => {
            if env.is_some() == file.is_some() {
                p.add(format!("{path}.auth"), "api_key needs exactly one of `env` or `file`");
            }
            if matches!(e.provider, Provider::Bedrock | Provider::Vertex) {
                p.add(
                    format!("{path}.auth.kind"),
                    format!("api_key does not work with {}; use aws_default or gcp_default", e.provider.as_str()),
                );
            }
        }
        (Some(Auth::AwsDefault), prov) if prov != Provider::Bedrock => {
            p.add(format!("{path}.auth.kind"), format!("aws_default only applies to bedrock, not {}", prov.as_str()));
        }
        (Some(Auth::GcpDefault), prov) if prov != Provider::Vertex => {
            p.add(format!("{path}.auth.kind"), format!("gcp_default only applies to vertex, not {}", prov.as_str()));
        }
        _ => {}
    }
    for header in e.headers.keys() {
        let lower = header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            p.add(format!("{path}.headers.{header}"), "is not a valid HTTP header name");
        } else if matches!(
            lower.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "authorization" | "x-api-key"
        ) {
            p.add(format!("{path}.headers.{header}"), "is set by spillway itself; credentials belong in `auth`");
        }
    }
    for (header, value) in &e.headers {
        if http::HeaderValue::from_str(value).is_err() {
            p.add(format!("{path}.headers.{header}"), "value is not a valid HTTP header value");
        }
    }
    if let Some(cap) = &e.capacity {
        if !config.pools.contains_key(&cap.pool) {
            p.add(
                format!("{path}.capacity.pool"),
                format!("unknown pool `{}`{}", cap.pool, known("pools", config.pools.keys())),
            );
        }
        if let Some(to) = &cap.spill_to {
            if to == name {
                p.add(format!("{path}.capacity.spill_to"), "an endpoint cannot spill to itself");
            } else if !config.endpoints.contains_key(to) {
                p.add(format!("{path}.capacity.spill_to"), format!("unknown endpoint `{to}`"));
            }
        }
    }
}

/// A spill_to chain that comes back to where it started would bounce a request forever.
fn check_spill_cycles(p: &mut Problems, config: &RoutingConfig) {
    for start in config.endpoints.keys() {
        let mut seen = BTreeSet::new();
        let mut at = start;
        while let Some(next) =
            config.endpoints.get(at).and_then(|e| e.capacity.as_ref()).and_then(|c| c.spill_to.as_ref())
        {
            if next == start {
                p.add(
                    format!("endpoints.{start}.capacity.spill_to"),
                    format!(
                        "spill_to forms a cycle through {}",
                        seen.iter().map(|s: &&String| s.as_str()).collect::<Vec<_>>().join(" → ")
                    ),
                );
                break;
            }
            if !seen.insert(next) || next == at {
                break;
            }
            at = next;
        }
    }
}

/// Embedding vectors of different models are not interchangeable: a feature whose hierarchy
/// could answer one request with 1024 numbers and the next with 768 would break every index
/// built from it. So the endpoints of a hierarchy that declare `dimensions` declare one size,
/// and once one declares, all do.
fn check_dimensions(p: &mut Problems, config: &RoutingConfig, feature: &str) {
    let Some(f) = config.features.get(feature) else { return };
    let declared: Vec<(&String, Option<u32>)> =
        f.hierarchy.iter().filter_map(|n| config.endpoints.get(n).map(|e| (n, e.dimensions))).collect();
    let Some((first, size)) = declared.iter().find_map(|(n, d)| d.map(|d| (*n, d))) else { return };
    for (i, (name, d)) in declared.iter().enumerate() {
        match d {
            Some(other) if *other != size => p.add(
                format!("features.{feature}.hierarchy[{i}]"),
                format!(
                    "endpoint `{name}` embeds into {other} dimensions but `{first}` into {size}: vectors of different sizes cannot share a feature"
                ),
            ),
            None => p.add(
                format!("features.{feature}.hierarchy[{i}]"),
                format!("endpoint `{name}` declares no `dimensions` while `{first}` declares {size}: declare every embedding endpoint's size"),
            ),
            Some(_) => {}
        }
    }
}

/// Every endpoint a feature can reach — its hierarchy and their spill_to twins — must sit inside
/// the feature's boundary. An endpoint whose region cannot be placed in a group never does.
fn check_boundary(p: &mut Problems, config: &RoutingConfig, feature: &str) {
    let f = &config.features[feature];
    if f.boundary.is_empty() {
        return;
    }
    for (i, g) in f.boundary.iter().enumerate() {
        if !KNOWN_GROUPS.contains(&g.as_str()) {
            p.add(
                format!("features.{feature}.boundary[{i}]"),
                format!("unknown region group `{g}`; known: {}", KNOWN_GROUPS.join(", ")),
            );
        }
    }
    for (i, name) in f.hierarchy.iter().enumerate() {
        let mut chain = vec![(format!("features.{feature}.hierarchy[{i}]"), name)];
        let mut at = name;
        while let Some(to) =
            config.endpoints.get(at).and_then(|e| e.capacity.as_ref()).and_then(|c| c.spill_to.as_ref())
        {
            if chain.iter().any(|(_, n)| *n == to) {
                break;
            }
            chain.push((format!("features.{feature}.hierarchy[{i}] (spill_to of `{at}`)"), to));
            at = to;
        }
        for (path, ep) in chain {
            let Some(endpoint) = config.endpoints.get(ep) else { continue };
            let group = endpoint.region.as_deref().and_then(region_group);
            match (endpoint.region.as_deref(), group) {
                (None, _) => p.add(
                    path,
                    format!(
                        "endpoint `{ep}` has no region, so it cannot be shown to stay inside boundary [{}]",
                        f.boundary.join(", ")
                    ),
                ),
                (Some(r), None) => {
                    p.add(path, format!("endpoint `{ep}` is in region `{r}`, which belongs to no known region group"))
                }
                (Some(r), Some(g)) if !f.boundary.iter().any(|b| b == g) => p.add(
                    path,
                    format!(
                        "endpoint `{ep}` is in region `{r}` (group {g}), outside the feature's boundary [{}]",
                        f.boundary.join(", ")
                    ),
                ),
                _ => {}
            }
        }
    }
}

fn known<'a>(what: &str, names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() { format!(" (no {what} are defined)") } else { format!(" (known {what}: {})", list.join(", ")) }
}
