//! The control plane's scale goals, measured on this machine (issue 6):
//!
//! 1. **push**: a config change is ACKed by `SIDECARS` simulated sidecar streams (default
//!    10,000) — goal ≤ 2 s from publish to the last ACK recorded by the control plane;
//! 2. **merge**: the reports of `SIDECARS` sidecars × 20 endpoints (three HDR histograms and
//!    outcome counters each, two pools, feedback), decoded from protobuf and merged, plus the
//!    tick that divides the pools among them — goal ≤ 1 core, i.e. one round of reports costs
//!    less CPU than the 10 s between rounds.
//!
//! `cargo bench -p spillway-controlplane --bench scale` (env `SIDECARS`, `STREAMS_PER_CONNECTION`,
//! `ONLY=push|merge`).
//! The simulated sidecars run in the same process as the control plane and share its two cores,
//! so the push figure includes their cost too. They share HTTP/2 connections
//! (`STREAMS_PER_CONNECTION`, default 10) because 10,000 connections on both ends would pass this
//! machine's 20,000 file-descriptor limit; the control plane's per-stream work is the same.

use hdrhistogram::Histogram;
use prost::Message;
use spillway_api::config::load_str;
use spillway_api::histogram;
use spillway_api::v1::routing_discovery_client::RoutingDiscoveryClient;
use spillway_api::v1::{
    DiscoveryRequest, EndpointReport, FeedbackSummary, Node, OutcomeCounts, PoolReport, TelemetryReport,
};
use spillway_controlplane::ads::{Discovery, DiscoveryService};
use spillway_controlplane::identity::Authenticator;
use spillway_controlplane::snapshot::Snapshot;
use spillway_controlplane::state::ConfigState;
use spillway_controlplane::telemetry::{Telemetry, TelemetryPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

const ENDPOINTS: usize = 20;
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A realistic config: 20 endpoints over two pools, a breaker policy, five features.
fn config_yaml(tag: &str) -> String {
    let mut y = String::from("endpoints:\n");
    for i in 0..ENDPOINTS {
        let pool = if i < 2 { format!(", capacity: {{ pool: pool-{i} }}") } else { String::new() };
        y += &format!(
            "  ep-{i}: {{ provider: openai_compatible, region: us-east-1, base_url: \"http://127.0.0.1:9/v1\", model: m-{i}{pool} }}\n"
        );
    }
    y += "pools:\n  pool-0: { model_units: 4, tokens_per_minute_per_unit: 100000 }\n  pool-1: { model_units: 2, tokens_per_minute_per_unit: 100000 }\n";
    y += "breakers:\n  b: { window_s: 30, min_requests: 20, error_rate: 0.5, slow_ttft: { over_ms: 2000, rate: 0.3 } }\n";
    y += "features:\n";
    for f in 0..5 {
        let h: Vec<String> = (0..4).map(|k| format!("ep-{}", f * 4 + k)).collect();
        y += &format!("  {tag}-{f}: {{ hierarchy: [{}], breaker: b }}\n", h.join(", "));
    }
    y
}

fn snapshot(tag: &str) -> Arc<Snapshot> {
    Snapshot::build(&load_str(&config_yaml(tag), "bench.yaml").expect("valid bench config")).expect("snapshot")
}

fn main() {
    let sidecars = env("SIDECARS", 10_000);
    let per_connection = env("STREAMS_PER_CONNECTION", 10).max(1);
    println!("control plane scale, {sidecars} simulated sidecars");
    let only = std::env::var("ONLY").unwrap_or_default();
    if only != "merge" {
        push(sidecars, per_connection);
    }
    if only != "push" {
        merge(sidecars);
    }
}

/// Goal 1: publish → every stream's ACK recorded.
fn push(sidecars: usize, per_connection: usize) {
    let discovery = Discovery::new();
    discovery.publish(snapshot("v1"));
    // The control plane on its own runtime, as in its own process.
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let d = discovery.clone();
    server_rt.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryService::server(d, Arc::new(Authenticator::SelfDeclared)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let acks = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let all = Arc::new([Notify::new(), Notify::new()]);
        let v2 = snapshot("v2");
        let mut channel = None;
        let connect_start = Instant::now();
        for i in 0..sidecars {
            if i % per_connection == 0 {
                let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).expect("url");
                channel = Some(endpoint.connect().await.expect("connect"));
            }
            let mut client = RoutingDiscoveryClient::new(channel.clone().expect("a channel"));
            let (acks, all, v2_version) = (acks.clone(), all.clone(), v2.version.clone());
            let node = Node { id: format!("ns/pod-{i}"), ..Default::default() };
            tokio::spawn(async move {
                let (tx, rx) = mpsc::channel(4);
                tx.send(DiscoveryRequest { node: Some(node.clone()), ..Default::default() }).await.expect("send");
                let mut responses = client.stream(ReceiverStream::new(rx)).await.expect("stream").into_inner();
                while let Ok(Some(r)) = responses.message().await {
                    // A sidecar applies the snapshot (decoded already) and ACKs it.
                    let ack = DiscoveryRequest {
                        node: Some(node.clone()),
                        version_info: r.version_info.clone(),
                        response_nonce: r.nonce,
                        error_detail: None,
                    };
                    if tx.send(ack).await.is_err() {
                        return;
                    }
                    let which = usize::from(r.version_info == v2_version);
                    if acks[which].fetch_add(1, Ordering::AcqRel) + 1 == sidecars {
                        all[which].notify_one();
                    }
                }
            });
        }
        all[0].notified().await;
        let connected = connect_start.elapsed();
        let recorded = |version: &str| discovery.nodes().values().filter(|n| n.acked_version.as_deref() == Some(version)).count();
        let mut nodes = discovery.subscribe_nodes();
        while recorded(&snapshot("v1").version) < sidecars {
            nodes.changed().await.expect("nodes");
        }
        println!("  push: {sidecars} streams connected and ACKed the first snapshot in {connected:.2?}");

        let t0 = Instant::now();
        discovery.publish(v2.clone());
        all[1].notified().await;
        let clients_done = t0.elapsed();
        while recorded(&v2.version) < sidecars {
            nodes.changed().await.expect("nodes");
        }
        let done = t0.elapsed();
        println!(
            "  push: config change ACKed by all {sidecars} streams in {done:.2?} (last ACK sent by a sidecar at {clients_done:.2?}); goal ≤ 2 s: {}",
            if done <= Duration::from_secs(2) { "met" } else { "MISSED" }
        );
    });
    rt.shutdown_background();
    server_rt.shutdown_background();
}

/// One sidecar's report as it arrives on the wire: 20 endpoints with histograms of a few hundred
/// requests each, two pools, some feedback.
fn report_bytes(seed: u64) -> Vec<u8> {
    fastrand::seed(seed);
    let endpoints = (0..ENDPOINTS)
        .map(|i| {
            let n = fastrand::u64(20..400);
            let (mut ttft, mut total, mut gap): (Histogram<u64>, Histogram<u64>, Histogram<u64>) =
                (histogram::new(), histogram::new(), histogram::new());
            for _ in 0..n {
                let t = fastrand::u64(80_000..900_000) + if fastrand::u8(..) < 8 { 3_000_000 } else { 0 };
                ttft.record(t).expect("in range");
                total.record(t + fastrand::u64(500_000..8_000_000)).expect("in range");
                gap.record(fastrand::u64(5_000..120_000)).expect("in range");
            }
            EndpointReport {
                endpoint: format!("ep-{i}"),
                outcomes: Some(OutcomeCounts {
                    ok: n,
                    server_error: n / 50,
                    throttled: n / 80,
                    client_cancelled: n / 100,
                    ..Default::default()
                }),
                ttft_hdr: histogram::encode(&ttft).expect("encode"),
                total_hdr: histogram::encode(&total).expect("encode"),
                inter_token_hdr: histogram::encode(&gap).expect("encode"),
            }
        })
        .collect();
    let pools = (0..2)
        .map(|p| PoolReport {
            pool: format!("pool-{p}"),
            tokens_used: fastrand::u64(1_000..50_000),
            tokens_demanded: fastrand::u64(1_000..60_000),
            held: None,
        })
        .collect();
    let feedback = (0..5)
        .map(|f| FeedbackSummary {
            feature: format!("v1-{f}"),
            endpoint: format!("ep-{}", f * 4),
            count: 3,
            score_sum: 2.5,
        })
        .collect();
    TelemetryReport { node: None, interval_ms: REPORT_INTERVAL.as_millis() as u64, endpoints, pools, feedback }
        .encode_to_vec()
}

/// Goal 2: a round of reports merged (protobuf decode included) plus one tick, on one thread.
fn merge(sidecars: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let state = ConfigState::new(Discovery::new());
        state.set_base(load_str(&config_yaml("v1"), "bench.yaml").expect("valid"), "bench", "file").expect("set");
        let telemetry = Telemetry::new(state.clone(), TelemetryPolicy::default());
        telemetry.set_config(&load_str(&config_yaml("v1"), "bench.yaml").expect("valid"));
        // 64 distinct reports, assigned round-robin: realistic variety without 10,000 encodes.
        let templates: Vec<Vec<u8>> = (0..64).map(report_bytes).collect();
        let bytes = templates.iter().map(Vec::len).sum::<usize>() / templates.len();
        println!("  merge: one report is {bytes} bytes on the wire ({ENDPOINTS} endpoints × 3 histograms)");
        let nodes: Vec<Node> = (0..sidecars)
            .map(|i| Node { id: format!("ns/pod-{i}"), zone: format!("zone-{}", i % 3), ..Default::default() })
            .collect();
        let start = tokio::time::Instant::now();
        let mut worst = Duration::ZERO;
        let rounds = 3;
        for round in 0..rounds {
            let now = start + REPORT_INTERVAL * (round + 1);
            let t = Instant::now();
            for (i, node) in nodes.iter().enumerate() {
                let mut r = TelemetryReport::decode(&templates[i % templates.len()][..]).expect("decode");
                r.node = Some(node.clone());
                telemetry.ingest(&node.id, &node.zone, &r, now);
            }
            let ingest = t.elapsed();
            telemetry.tick(now);
            let took = t.elapsed();
            worst = worst.max(took);
            println!(
                "  merge: round {}: {sidecars} reports merged in {ingest:.2?}, with the tick {took:.2?} = {:.3} of a core over {} s",
                round + 1,
                took.as_secs_f64() / REPORT_INTERVAL.as_secs_f64(),
                REPORT_INTERVAL.as_secs()
            );
        }
        println!(
            "  merge: worst round {worst:.2?} = {:.3} cores; goal ≤ 1 core: {}",
            worst.as_secs_f64() / REPORT_INTERVAL.as_secs_f64(),
            if worst < REPORT_INTERVAL { "met" } else { "MISSED" }
        );
    });
}
