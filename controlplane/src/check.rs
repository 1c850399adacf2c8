//! `spillway-control check FILE…`: validates routing configs without running anything.

use spillway_api::config::load_file;
use std::fmt::Write;
use std::path::Path;

/// Validates every file; returns the report to print and whether all of them are valid.
pub fn check<P: AsRef<Path>>(paths: &[P]) -> (String, bool) {
    let mut report = String::new();
    let mut all_ok = true;
    for path in paths {
        let path = path.as_ref();
        match load_file(path) {
            Ok(c) => {
                let _ = writeln!(
                    report,
                    "{}: ok ({} endpoints, {} features, {} pools, {} breaker policies)",
                    path.display(),
                    c.endpoints.len(),
                    c.features.len(),
                    c.pools.len(),
                    c.breakers.len()
                );
            }
            Err(e) => {
                all_ok = false;
                let _ = writeln!(report, "{e}");
            }
        }
    }
    (report, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_file_and_fails_on_any_invalid_one() {
        let dir = std::env::temp_dir().join(format!("spillway-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        let bad = dir.join("bad.yaml");
        std::fs::write(&good, "endpoints:\n  a: { provider: openai, model: m }\nfeatures:\n  f: { hierarchy: [a] }\n")
            .unwrap();
        std::fs::write(&bad, "endpoints: {}\nfeatures:\n  f: { hierarchy: [a] }\n").unwrap();
        let (report, ok) = check(&[&good]);
        assert!(ok, "{report}");
        assert!(report.contains("good.yaml: ok (1 endpoints, 1 features"), "{report}");
        let (report, ok) = check(&[&good, &bad]);
        assert!(!ok);
        assert!(report.contains("bad.yaml: features.f.hierarchy[0]: unknown endpoint `a`"), "{report}");
        let (report, ok) = check(&[dir.join("missing.yaml")]);
        assert!(!ok && report.contains("cannot read the file"), "{report}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
