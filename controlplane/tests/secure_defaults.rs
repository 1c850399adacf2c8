//! `spillway-control serve` is secure unless told otherwise: it will not serve gRPC in plaintext
//! beyond loopback, nor take sidecars at their word, without an explicit, named opt-out.

use std::process::Command;

fn serve(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routing.yaml");
    std::fs::write(&config, "endpoints:\n  e: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }\nfeatures:\n  chat: { hierarchy: [e] }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-control"))
        .args(["serve", "--config", config.to_str().unwrap(), "--health-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plaintext_beyond_loopback_needs_the_named_opt_out() {
    let (ok, err) = serve(&["--listen", "0.0.0.0:0", "--insecure-self-declared-identity"]);
    assert!(!ok);
    assert!(err.contains("refusing to serve gRPC in plaintext") && err.contains("--insecure-plaintext"), "{err}");
}

#[test]
fn unverified_sidecars_need_the_named_opt_out() {
    let (ok, err) = serve(&["--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("TokenReview") && err.contains("--insecure-self-declared-identity"), "{err}");
}
