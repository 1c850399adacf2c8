use clap::Parser;
use spillway_dataplane::log::access;
use spillway_dataplane::upstream::secrets::SecretPolicy;
use spillway_dataplane::{Options, Sidecar};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// glibc's malloc cost ≈11 % of the sidecar's CPU at saturation; mimalloc's per-thread heaps
/// take most of that back (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// spillway's sidecar: an OpenAI-compatible endpoint on loopback that routes each feature
/// across providers with fallback.
#[derive(Parser)]
#[command(name = "spillway-proxy", version)]
struct Args {
    /// Routing config (YAML); reloaded when the file changes. Not used with --control-plane.
    #[arg(long, env = "SPILLWAY_CONFIG", required_unless_present_any = ["control_plane", "probe_ready", "probe_live"])]
    config: Option<PathBuf>,
    /// Managed mode: take routing snapshots from this control plane (e.g. http://spillway-control:7000).
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// This sidecar's identity for the control plane (usually namespace/pod).
    #[arg(long, env = "SPILLWAY_NODE_ID", default_value = "local")]
    node_id: String,
    /// Where a managed sidecar saves its last accepted snapshot, to start from it when the
    /// control plane is unreachable.
    #[arg(long, env = "SPILLWAY_SNAPSHOT_FILE")]
    snapshot_file: Option<PathBuf>,
    /// CA certificate (PEM) of the control plane's TLS certificate; enables TLS.
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// This sidecar's certificate and key (PEM) for mutual TLS with the control plane.
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE_CERT", requires = "control_plane_key")]
    control_plane_cert: Option<PathBuf>,
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE_KEY", requires = "control_plane_cert")]
    control_plane_key: Option<PathBuf>,
    /// The CA certificate as PEM text instead of a file (the injector passes it this way).
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE_CA_PEM", conflicts_with = "control_plane_ca", hide_env_values = true)]
    control_plane_ca_pem: Option<String>,
    /// A projected service-account token (audience `spillway`) that proves this sidecar's
    /// identity to the control plane; re-read on every connection.
    #[arg(long, env = "SPILLWAY_CONTROL_PLANE_TOKEN_FILE")]
    control_plane_token_file: Option<PathBuf>,
    /// Managed mode: the environment variables a pushed snapshot may use as credentials
    /// (comma-separated; `*` matches any run of characters; `VAR@host` binds a variable to the
    /// hosts it may be sent to). Standalone, the config file may name any.
    #[arg(long, env = "SPILLWAY_ALLOW_SECRET_ENV", default_value = "*_API_KEY")]
    allow_secret_env: String,
    /// Managed mode: directories a pushed snapshot may read key files from (comma-separated).
    #[arg(long, env = "SPILLWAY_ALLOW_SECRET_DIR", value_delimiter = ',')]
    allow_secret_dir: Vec<PathBuf>,
    /// This sidecar's availability zone (the fleet view breaks latency down per zone).
    #[arg(long, env = "SPILLWAY_ZONE", default_value = "")]
    zone: String,
    /// Seconds between telemetry reports to the control plane (the control plane is sized for
    /// 10,000 sidecars at the default).
    #[arg(long, env = "SPILLWAY_REPORT_INTERVAL_S", default_value_t = 10)]
    report_interval_s: u64,
    /// Listen address; loopback only.
    #[arg(long, env = "SPILLWAY_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Seconds a client may take to send a request head; also how long an idle keep-alive
    /// connection is kept.
    #[arg(long, default_value_t = 30)]
    header_timeout_s: u64,
    /// Seconds a client may take to send a whole request body (then 408).
    #[arg(long, default_value_t = 30)]
    body_timeout_s: u64,
    /// Longest upstream frame (an SSE event, an event-stream message) held in memory, in bytes;
    /// a longer one fails the attempt, or ends a committed stream with an error event.
    #[arg(long, default_value_t = spillway_dataplane::protocol::DEFAULT_MAX_FRAME)]
    max_upstream_frame_bytes: usize,
    /// Do not reload the config when the file changes.
    #[arg(long)]
    no_watch: bool,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, default_value_t = 30)]
    grace_s: u64,
    /// Probe the sidecar listening at --listen: exit 0 if it is ready (has a routing config),
    /// 1 if not. For exec probes: the sidecar binds loopback, out of the kubelet's reach.
    #[arg(long, conflicts_with = "probe_live")]
    probe_ready: bool,
    /// Probe the sidecar listening at --listen: exit 0 if it answers at all.
    #[arg(long)]
    probe_live: bool,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.probe_ready || args.probe_live {
        let path = if args.probe_ready { "/readyz" } else { "/healthz" };
        return probe(args.listen, path).await;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: container logs (`kubectl logs`) get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // One line per request: batched in memory, written out in large writes (see `log`).
    let writer = spillway_dataplane::log::Batched::new(std::io::stderr());
    let log = writer.start_flusher();
    let format = if args.log_format == "json" { access::Format::Json } else { access::Format::Text };
    if !ansi {
        // On a terminal the access line keeps tracing's colours; elsewhere it is written directly.
        access::install(writer.clone(), format);
    }
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer);
    match format {
        access::Format::Json => fmt.json().init(),
        access::Format::Text => fmt.init(),
    }
    let pair = args.control_plane_cert.as_deref().zip(args.control_plane_key.as_deref());
    let ca = match (&args.control_plane_ca, &args.control_plane_ca_pem) {
        (Some(file), _) => Some(std::fs::read(file)),
        (None, Some(pem)) => Some(Ok(pem.clone().into_bytes())),
        (None, None) => None,
    };
    let tls = match ca {
        Some(ca) => match ca.and_then(|ca| spillway_dataplane::managed::ClientTls::with_ca(ca, pair)) {
            Ok(t) => Some(t),
            Err(e) => {
                log.flush();
                eprintln!("spillway-proxy: cannot read the control-plane TLS files: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let managed = args.control_plane.is_some();
    let opts = Options {
        listen: args.listen,
        config: args.config.unwrap_or_default(),
        max_body_bytes: args.max_body_bytes,
        header_timeout: Duration::from_secs(args.header_timeout_s.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_s.max(1)),
        max_upstream_frame_bytes: args.max_upstream_frame_bytes,
        watch: !args.no_watch,
        grace: Duration::from_secs(args.grace_s),
        control_plane: args.control_plane,
        node_id: args.node_id,
        snapshot_file: args.snapshot_file,
        control_plane_tls: tls,
        zone: args.zone,
        report_interval: Duration::from_secs(args.report_interval_s.max(1)),
        control_plane_token_file: args.control_plane_token_file,
        secrets: if managed {
            SecretPolicy::restricted(&args.allow_secret_env, args.allow_secret_dir)
        } else {
            SecretPolicy::default()
        },
    };
    let mut sidecar = match Sidecar::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            log.flush();
            eprintln!("spillway-proxy: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = sidecar.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
    });
    sidecar.wait().await;
    std::process::ExitCode::SUCCESS
}

/// `GET path` on the local sidecar; success only on 200.
async fn probe(addr: SocketAddr, path: &str) -> std::process::ExitCode {
    use http_body_util::Empty;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://{addr}{path}");
    let answer = tokio::time::timeout(Duration::from_secs(2), client.get(uri.parse().expect("a valid URI"))).await;
    match answer {
        Ok(Ok(r)) if r.status() == 200 => std::process::ExitCode::SUCCESS,
        Ok(Ok(r)) => {
            eprintln!("spillway-proxy: {uri} answered {}", r.status());
            std::process::ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("spillway-proxy: {uri}: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("spillway-proxy: {uri}: no answer within 2 s");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
