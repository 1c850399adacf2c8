//! The config directory: files merged into one config, problems attributed to their file,
//! duplicates named, and changes published as new snapshots.

use spillway_controlplane::ads::Discovery;
use spillway_controlplane::source::{DirSource, load_dir};
use spillway_controlplane::state::ConfigState;
use std::time::Duration;

const ENDPOINTS: &str =
    "endpoints:\n  a: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }\n";

fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

#[test]
fn files_merge_and_may_reference_each_other() {
    let d = dir(&[
        ("endpoints.yaml", ENDPOINTS),
        ("features.yaml", "features:\n  chat: { hierarchy: [a] }\n"),
        ("notes.txt", "ignored"),
    ]);
    let c = load_dir(d.path()).unwrap();
    assert_eq!((c.endpoints.len(), c.features.len()), (1, 1));
}

#[test]
fn problems_name_the_file_that_has_them() {
    let d =
        dir(&[("endpoints.yaml", ENDPOINTS), ("features.yaml", "features:\n  chat: { hierarchy: [a, missing] }\n")]);
    let e = load_dir(d.path()).unwrap_err().to_string();
    assert!(e.contains("features.yaml: features.chat.hierarchy[1]: unknown endpoint `missing`"), "{e}");

    let d =
        dir(&[("one.yaml", ENDPOINTS), ("two.yaml", &format!("{ENDPOINTS}features:\n  chat: {{ hierarchy: [a] }}\n"))]);
    let e = load_dir(d.path()).unwrap_err().to_string();
    assert!(e.contains("two.yaml: endpoints.a: is also defined in") && e.contains("one.yaml"), "{e}");

    let d = dir(&[("bad.yaml", "features: [oops\n")]);
    assert!(load_dir(d.path()).unwrap_err().to_string().contains("bad.yaml"));
}

#[tokio::test]
async fn a_changed_directory_is_published_as_a_new_snapshot() {
    let d = dir(&[("endpoints.yaml", ENDPOINTS), ("features.yaml", "features:\n  chat: { hierarchy: [a] }\n")]);
    let discovery = Discovery::new();
    let _source = DirSource::start(d.path().to_owned(), ConfigState::new(discovery.clone())).unwrap();
    let first = discovery.current().unwrap().version.clone();
    let mut rx = discovery.subscribe();
    rx.borrow_and_update();
    let tmp = d.path().join(".features.tmp");
    std::fs::write(&tmp, "features:\n  chat: { hierarchy: [a] }\n  search: { hierarchy: [a] }\n").unwrap();
    std::fs::rename(&tmp, d.path().join("features.yaml")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), rx.changed()).await.expect("no new snapshot").unwrap();
    let second = discovery.current().unwrap();
    assert_ne!(second.version, first);
    assert!(String::from_utf8_lossy(&second.config_json).contains("search"));
}
