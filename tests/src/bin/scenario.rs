//! `scenario`: plays the resilience scenarios against the release sidecar binary in real time
//! and prints each score card and timeline (`bench/scenarios.sh` builds and runs it).
//!
//! `scenario --sidecar target/release/spillway-proxy [--only NAME]... [--timeline]`

use clap::Parser;
use spillway_tests::scenario::{self, Sidecar};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "scenario")]
struct Args {
    /// The sidecar binary to run.
    #[arg(long)]
    sidecar: PathBuf,
    /// Run only these scenarios (surge, outage, brownout-hedged, brownout, flapping, recovery).
    #[arg(long)]
    only: Vec<String>,
    /// Print the per-second timeline under each score card.
    #[arg(long)]
    timeline: bool,
    /// Write the reports as JSON lines here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The sidecar process; killed when dropped.
struct Process(#[allow(dead_code)] tokio::process::Child, #[allow(dead_code)] tempfile::TempDir);

async fn start(binary: PathBuf, yaml: String) -> anyhow::Result<(Sidecar, Process)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("routing.yaml");
    std::fs::write(&config, yaml)?;
    // A free loopback port: bound, read, released for the sidecar.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if scenario::load::get(&url, "/readyz").await.is_some_and(|b| b.contains("\"ready\":true")) {
            return Ok((Sidecar { url }, Process(child, dir)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the sidecar at {url} did not become ready in 10 s")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut all_passed = true;
        let mut json = String::new();
        for s in scenario::all().into_iter().filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.name)) {
            let binary = args.sidecar.clone();
            let report = scenario::run(&s, |yaml| start(binary, yaml)).await?;
            println!("{}", report.card());
            if args.timeline {
                println!("{}", report.timeline_text());
            }
            all_passed &= report.passed();
            let checks: Vec<_> = report
                .checks
                .iter()
                .map(|c| serde_json::json!({"check": c.what, "measured": c.measured, "pass": c.pass}))
                .collect();
            json.push_str(
                &serde_json::json!({
                    "scenario": report.name, "requests": report.requests, "failed": report.failed,
                    "rejected": report.rejected, "success_pct": report.success_pct,
                    "p99_first_token_ms": report.p99_first_token_ms, "to_backup_s": report.to_backup_s,
                    "back_to_primary_s": report.back_s, "amplification": report.amplification,
                    "breaker_open_after_s": report.open_after_s, "opens": report.opens,
                    "ramp_steps": report.ramp_steps, "surge_on_pt": report.pt_share_surge,
                    "calm_on_demand": report.od_share_calm, "checks": checks,
                })
                .to_string(),
            );
            json.push('\n');
        }
        if let Some(path) = &args.json {
            std::fs::write(path, json)?;
        }
        if !all_passed {
            anyhow::bail!("some checks failed");
        }
        Ok(())
    })
}
