use clap::Parser;
use spillway_dataplane::{Options, Sidecar};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// spillway's sidecar: an OpenAI-compatible endpoint on loopback that routes each feature
/// across providers with fallback.
#[derive(Parser)]
#[command(name = "spillway-proxy", version)]
struct Args {
    /// Routing config (YAML); reloaded when the file changes.
    #[arg(long, env = "SPILLWAY_CONFIG")]
    config: PathBuf,
    /// Listen address; loopback only.
    #[arg(long, env = "SPILLWAY_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Do not reload the config when the file changes.
    #[arg(long)]
    no_watch: bool,
    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, default_value_t = 30)]
    grace_s: u64,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_format == "json" {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let opts = Options {
        listen: args.listen,
        config: args.config,
        max_body_bytes: args.max_body_bytes,
        watch: !args.no_watch,
        grace: Duration::from_secs(args.grace_s),
    };
    let mut sidecar = match Sidecar::start(opts).await {
        Ok(s) => s,
        Err(e) => {
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
