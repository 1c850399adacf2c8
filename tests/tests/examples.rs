//! Every config under examples/ is valid and loads into a sidecar: a newcomer's first run must
//! not start with a config error.

use spillway_tests::harness::TestSidecar;

#[tokio::test]
async fn every_example_config_starts_a_sidecar() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = TestSidecar::start(&text).await {
                panic!("{}: {e:#}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "no example configs found in {}", dir.display());
}
