//! Which credentials a routing config may make the sidecar use.
//!
//! A standalone sidecar's config is a file its operator wrote: it may name any variable or file.
//! A managed sidecar's config arrives over the network; without a bound, a pushed snapshot could
//! name `auth.env: AWS_SECRET_ACCESS_KEY` and a `base_url` of its choosing and receive that secret
//! as a bearer token. So a managed sidecar reads credentials only from the variables and
//! directories its own flags (set by the injector) allow. An endpoint naming anything else is
//! treated like one whose key is missing: skipped, reported at `/readyz`, never sent.
//!
//! A pattern may also bind a variable to hosts: `OPENAI_API_KEY@api.openai.com` lets a snapshot use
//! that key only with an endpoint whose URL is on that host. The cloud chains (AWS, Google) send
//! their credentials only to their providers' own domains (`*.amazonaws.com`, `*.googleapis.com`)
//! under a restricted policy. And a key goes only to its endpoint's own URL: the upstream client
//! follows no redirects, so a `307` to another host fails the attempt, it does not forward the key.

use std::path::{Component, Path, PathBuf};

/// Where credentials may come from. The default allows everything (standalone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPolicy {
    /// `None`: any variable. Else a variable must match one pattern (`*` = any run of characters).
    env: Option<Vec<String>>,
    /// `None`: any file. Else a file must lie under one of these directories.
    dirs: Option<Vec<PathBuf>>,
}

impl SecretPolicy {
    /// The managed sidecar's policy: comma-separated variable patterns, and directories.
    pub fn restricted(env_patterns: &str, dirs: Vec<PathBuf>) -> Self {
        let env = env_patterns.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
        SecretPolicy { env: Some(env), dirs: Some(dirs) }
    }

    /// May a credential be read from environment variable `var` and sent to `host`?
    pub fn check_env(&self, var: &str, host: &str) -> Result<(), String> {
        let Some(patterns) = &self.env else { return Ok(()) };
        let allowed = |p: &String| match p.split_once('@') {
            Some((v, h)) => matches(v, var) && matches(h, host),
            None => matches(p, var),
        };
        if patterns.iter().any(allowed) {
            return Ok(());
        }
        Err(format!(
            "environment variable {var} is not one this sidecar may send to {host} as a credential (allowed: {})",
            if patterns.is_empty() { "none".to_owned() } else { patterns.join(", ") }
        ))
    }

    /// May a cloud chain's credentials (AWS, Google) be sent to `host`? Only to `domain`'s hosts
    /// under a restricted policy.
    pub fn check_cloud_host(&self, host: &str, domain: &str) -> Result<(), String> {
        if self.env.is_none() || host.ends_with(domain) {
            return Ok(());
        }
        Err(format!("cloud credentials go only to *{domain} hosts from a managed sidecar, not to {host}"))
    }

    /// May a credential be read from `file`? Relative paths and `..` never are under a
    /// restricted policy: what is allowed must be decidable from the path alone.
    pub fn check_file(&self, file: &Path) -> Result<(), String> {
        let Some(dirs) = &self.dirs else { return Ok(()) };
        let plain = file.is_absolute() && file.components().all(|c| !matches!(c, Component::ParentDir));
        if plain && dirs.iter().any(|d| file.starts_with(d)) {
            return Ok(());
        }
        Err(format!("key file {} is not under a directory this sidecar may read credentials from", file.display()))
    }
}

/// `pattern` with `*` wildcards against `s`, whole-string.
fn matches(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = s.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, s, want) in [
            ("*_API_KEY", "OPENAI_API_KEY", true),
            ("*_API_KEY", "AWS_SECRET_ACCESS_KEY", false),
            ("*_API_KEY", "_API_KEY", true),
            ("OPENAI_API_KEY", "OPENAI_API_KEY", true),
            ("OPENAI_API_KEY", "OPENAI_API_KEY_2", false),
            ("LLM_*", "LLM_KEY", true),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AxxC", false),
            ("AB*BA", "ABA", false),
            ("*", "anything", true),
        ] {
            assert_eq!(matches(p, s), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn a_restricted_policy_refuses_what_it_does_not_name() {
        let p = SecretPolicy::restricted("*_API_KEY, LLM_*", vec![PathBuf::from("/var/run/secrets/llm")]);
        assert!(p.check_env("ANTHROPIC_API_KEY", "api.anthropic.com").is_ok());
        let e = p.check_env("AWS_SECRET_ACCESS_KEY", "evil.example").unwrap_err();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY") && e.contains("*_API_KEY, LLM_*"), "{e}");
        let bound = SecretPolicy::restricted("OPENAI_API_KEY@api.openai.com", vec![]);
        assert!(bound.check_env("OPENAI_API_KEY", "api.openai.com").is_ok());
        assert!(bound.check_env("OPENAI_API_KEY", "evil.example").is_err(), "the key is bound to its host");
        assert!(p.check_cloud_host("bedrock-runtime.us-east-1.amazonaws.com", ".amazonaws.com").is_ok());
        assert!(p.check_cloud_host("evil.example", ".amazonaws.com").is_err());
        assert!(p.check_file(Path::new("/var/run/secrets/llm/openai")).is_ok());
        for bad in ["/var/run/secrets/llm/../kubernetes.io/serviceaccount/token", "/etc/passwd", "llm/openai"] {
            assert!(p.check_file(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(SecretPolicy::restricted("", vec![]).check_env("OPENAI_API_KEY", "h").is_err());
        let any = SecretPolicy::default();
        assert!(any.check_env("AWS_SECRET_ACCESS_KEY", "h").is_ok() && any.check_file(Path::new("k")).is_ok());
        assert!(any.check_cloud_host("127.0.0.1", ".amazonaws.com").is_ok());
    }
}
