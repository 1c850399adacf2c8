use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// spillway's control plane.
#[derive(Parser)]
#[command(name = "spillway-control", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve routing snapshots to sidecars over gRPC (RoutingDiscovery.Stream).
    Serve {
        /// Routing config: a YAML file, or a directory of YAML files merged into one and watched
        /// for changes. Validated before anything is pushed.
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: std::net::SocketAddr,
        /// TLS certificate and key (PEM); without them the server speaks plaintext.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA (PEM) that client certificates must chain to: turns on mutual TLS.
        #[arg(long, requires = "tls_cert")]
        client_ca: Option<PathBuf>,
        /// Admin HTTP API address; served only with a JWT key below.
        #[arg(long, default_value = "127.0.0.1:7001")]
        admin_listen: std::net::SocketAddr,
        /// File holding the HS256 secret that signs admin tokens.
        #[arg(long, conflicts_with = "jwt_rs256_public_key")]
        jwt_hs256_secret_file: Option<PathBuf>,
        /// RSA public key (PEM) that verifies RS256 admin tokens.
        #[arg(long)]
        jwt_rs256_public_key: Option<PathBuf>,
        /// Seconds between fleet-wide rounds: breaker verdicts on the merged view, PT lease
        /// grants, feedback trend checks.
        #[arg(long = "tick-s", default_value_t = 5)]
        tick_s: u64,
    },
    /// Validate routing config files; prints every problem with its file and path, exits 1 if
    /// any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Serve {
            config,
            listen,
            tls_cert,
            tls_key,
            client_ca,
            admin_listen,
            jwt_hs256_secret_file,
            jwt_rs256_public_key,
            tick_s,
        } => {
            tracing_subscriber::fmt().with_writer(std::io::stderr).init();
            let run = async move {
                use spillway_controlplane::{admin, ads, source, state, telemetry};
                let discovery = ads::Discovery::new();
                let state = state::ConfigState::new(discovery.clone());
                let _source = if config.is_dir() {
                    Some(source::DirSource::start(config.clone(), state.clone()).map_err(anyhow::Error::msg)?)
                } else {
                    let cfg = spillway_api::config::load_file(&config)?;
                    state.set_base(cfg, &format!("file:{}", config.display()), "file")?;
                    None
                };
                let policy = telemetry::TelemetryPolicy {
                    tick: std::time::Duration::from_secs(tick_s.max(1)),
                    ..Default::default()
                };
                let telemetry = telemetry::Telemetry::new(state.clone(), policy);
                let _ticks = telemetry.start();
                let auth = match (&jwt_hs256_secret_file, &jwt_rs256_public_key) {
                    (Some(f), _) => Some(admin::AdminAuth::hs256(std::fs::read(f)?.trim_ascii())),
                    (None, Some(f)) => {
                        Some(admin::AdminAuth::rs256_pem(&std::fs::read(f)?).map_err(anyhow::Error::msg)?)
                    }
                    (None, None) => None,
                };
                if let Some(auth) = auth {
                    let router = admin::Admin::new(discovery.clone(), state.clone(), telemetry.clone(), auth).router();
                    let admin = tokio::net::TcpListener::bind(admin_listen).await?;
                    tracing::info!(%admin_listen, "admin API listening");
                    tokio::spawn(async move { axum::serve(admin, router).await });
                } else {
                    tracing::warn!("no JWT key given: the admin API is off");
                }
                let version = discovery.current().map(|s| s.version.clone()).unwrap_or_default();
                tracing::info!(%version, %listen, "serving routing snapshots");
                let mut server = tonic::transport::Server::builder();
                if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                    let tls = spillway_controlplane::tls::server_config(cert, key, client_ca.as_deref())?;
                    server = server.tls_config(tls)?;
                }
                server
                    .add_service(ads::DiscoveryService::server(discovery))
                    .add_service(telemetry::TelemetryService::server(telemetry))
                    .serve(listen)
                    .await?;
                anyhow::Ok(())
            };
            match tokio::runtime::Runtime::new().map(|rt| rt.block_on(run)) {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("spillway-control: {e:#}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("spillway-control: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { files } => {
            let (report, ok) = spillway_controlplane::check::check(&files);
            print!("{report}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}
