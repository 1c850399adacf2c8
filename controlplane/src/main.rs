use clap::{Args as ClapArgs, Parser, Subcommand};
use spillway_controlplane::inject::InjectOptions;
use spillway_controlplane::{
    admin, ads, crd_source, election, etcd, forward, health, identity, inject, kube, leases, listen, shared, source,
    state, telemetry, webhook,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// spillway's control plane.
#[derive(Parser)]
#[command(name = "spillway-control", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve routing snapshots to sidecars over gRPC (RoutingDiscovery.Stream), their telemetry,
    /// the admin API and, with --webhook-listen, the sidecar injector.
    Serve(Box<Serve>),
    /// Add the sidecar to every pod template in a YAML file (`-` for stdin), as the injector
    /// webhook would, and print the result; warnings go to stderr.
    Inject {
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        sidecar: Box<Sidecar>,
    },
    /// Print the SpillwayRouting and SpillwayDemotion CustomResourceDefinitions (the chart installs them from
    /// helm/spillway/crds/).
    Crd,
    /// Validate routing config files; prints every problem with its file and path, exits 1 if
    /// any file is invalid.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(ClapArgs)]
struct Serve {
    /// Routing config: a YAML file, or a directory of YAML files merged into one and watched
    /// for changes. Validated before anything is pushed. With --etcd-endpoints it only seeds an
    /// empty store: etcd then holds the config, and the admin API writes it there.
    #[arg(long, required_unless_present_any = ["etcd_endpoints", "routing_objects"])]
    config: Option<PathBuf>,
    /// Keep the routing config, its history, the shared state and the leader election in this
    /// etcd cluster (comma-separated client URLs): every replica serves the config etcd holds.
    #[arg(long, env = "SPILLWAY_ETCD_ENDPOINTS", value_delimiter = ',',
          conflicts_with_all = ["leader_election_lease", "shared_state_configmap"])]
    etcd_endpoints: Vec<String>,
    /// Take the routing config from the SpillwayRouting objects of the pod's namespace (the
    /// chart's `controlPlane.routingObjects`): every replica watches them; the admin API writes
    /// its own object, `spillway-admin`. --config then only seeds a namespace without objects.
    #[arg(long, conflicts_with = "etcd_endpoints")]
    routing_objects: bool,
    /// The control plane's Service: with several replicas on Kubernetes, `/v1/nodes` and the
    /// rollout gather every ready replica's share from its endpoints (port `admin`).
    #[arg(long)]
    peer_service: Option<String>,
    /// Every key this control plane keeps in etcd starts with it.
    #[arg(long, default_value = "/spillway")]
    etcd_prefix: String,
    /// CA (PEM) the etcd members' certificates chain to (turns on TLS to etcd).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for an etcd cluster that requires mutual TLS.
    #[arg(long, requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// Seconds a leader that stops renewing keeps its leadership (Kubernetes Lease or etcd
    /// lease); it steps down on its own after two thirds of it.
    #[arg(long = "leader-lease-s", default_value_t = 15)]
    leader_lease_s: u64,
    /// Seconds a sidecar's PT lease grant lasts without a new one.
    #[arg(long = "grant-ttl-s", default_value_t = 30)]
    grant_ttl_s: u64,
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// TLS certificate and key (PEM); without them the server speaks plaintext.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: turns on mutual TLS.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Serve gRPC with the injector's certificate (self-signed or from --webhook-cert), whose
    /// CA the injector gives every sidecar: TLS end to end with nothing else to manage.
    #[arg(long, conflicts_with = "tls_cert", requires = "webhook_listen")]
    tls_from_webhook: bool,
    /// Serve gRPC in plaintext on a non-loopback address. Sidecars' tokens and the routing
    /// config then cross the network unencrypted: for a trusted network only.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Take sidecars' node ids and zones from their requests instead of verifying their
    /// projected service-account tokens with the Kubernetes API (TokenReview). Anyone who
    /// reaches the gRPC port can then report for any node: for a laptop or a test bench only.
    #[arg(long)]
    insecure_self_declared_identity: bool,
    /// Namespaces whose sidecars may connect (comma-separated; default any).
    #[arg(long, value_delimiter = ',')]
    sidecar_namespaces: Vec<String>,
    /// Elect one leader among replicas with this Kubernetes Lease (in the pod's namespace): only
    /// the leader takes telemetry, divides PT pools and judges the fleet. Without it this process
    /// leads alone — right for one replica only.
    #[arg(long)]
    leader_election_lease: Option<String>,
    /// Share state among replicas on Kubernetes: the feedback demotions as SpillwayDemotion
    /// objects (in the pod's namespace), so that every replica applies the same ones and a
    /// restart keeps them, and the leader's checkpoint in this ConfigMap.
    #[arg(long)]
    shared_state_configmap: Option<String>,
    /// Where this replica's admin API answers, for the others to forward the leader's views to
    /// while it leads (e.g. http://$(POD_IP):7001). Default: the admin listen address, when it
    /// is a specific one (not 0.0.0.0).
    #[arg(long, env = "SPILLWAY_ADVERTISE_ADMIN_URL", default_value = "")]
    advertise_admin_url: String,
    /// Where this replica's gRPC server answers, for a follower to send sidecars' telemetry
    /// streams to while it leads (e.g. https://$(POD_IP):7000; sidecars verify the certificate
    /// against the control-plane address they were given). Default: the gRPC listen address,
    /// when it is a specific one.
    #[arg(long, env = "SPILLWAY_ADVERTISE_GRPC_URL", default_value = "")]
    advertise_grpc_url: String,
    /// This replica's name in the election (the pod's name).
    #[arg(long, env = "POD_NAME", default_value = "spillway-control")]
    pod_name: String,
    /// Admin HTTP API address; served only with a JWT key below.
    #[arg(long, default_value = "127.0.0.1:7001")]
    admin_listen: SocketAddr,
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
    /// `/healthz` and `/readyz` (plain HTTP, no token) for the kubelet.
    #[arg(long, default_value = "127.0.0.1:7002")]
    health_listen: SocketAddr,
    #[command(flatten)]
    injector: Injector,
}

#[derive(ClapArgs)]
struct Injector {
    /// Serve the sidecar injector (`POST /inject`, HTTPS) here.
    #[arg(long)]
    webhook_listen: Option<SocketAddr>,
    /// The webhook's certificate and key (PEM), re-read when they change (cert-manager).
    #[arg(long, requires = "webhook_key", conflicts_with = "webhook_self_signed")]
    webhook_cert: Option<PathBuf>,
    #[arg(long, requires = "webhook_cert")]
    webhook_key: Option<PathBuf>,
    /// Make the webhook certificate here, keep it in --webhook-secret and write its CA into
    /// --webhook-configuration, through the Kubernetes API.
    #[arg(long)]
    webhook_self_signed: bool,
    /// The webhook Service's name and namespace: the certificate's DNS names.
    #[arg(long, default_value = "spillway-control")]
    webhook_service: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "spillway")]
    webhook_namespace: String,
    #[arg(long, default_value = "spillway-webhook-tls")]
    webhook_secret: String,
    #[arg(long, default_value = "spillway-injector")]
    webhook_configuration: String,
    /// The ValidatingWebhookConfiguration that checks SpillwayRouting objects at admission
    /// (`POST /validate-routing`), whose CA --webhook-self-signed also writes.
    #[arg(long)]
    webhook_validating_configuration: Option<String>,
    #[command(flatten)]
    sidecar: Sidecar,
}

/// What injected sidecars look like.
#[derive(ClapArgs)]
struct Sidecar {
    /// The injected sidecar's image.
    #[arg(long, default_value = "ghcr.io/spillway/spillway-proxy:latest")]
    sidecar_image: String,
    #[arg(long)]
    sidecar_pull_policy: Option<String>,
    /// The control plane's address as injected sidecars reach it.
    #[arg(long, default_value = "http://spillway-control.spillway.svc:7000")]
    sidecar_control_plane: String,
    /// The sidecar's loopback port (a pod may override it with `spillway.dev/proxy-port`).
    #[arg(long, default_value_t = 4000)]
    sidecar_port: u16,
    #[arg(long, default_value = "50m")]
    sidecar_cpu: String,
    #[arg(long, default_value = "64Mi")]
    sidecar_memory: String,
    /// A Secret in the pod's namespace whose keys become the sidecar's environment.
    #[arg(long)]
    sidecar_credentials_secret: Option<String>,
    /// Do not set OPENAI_BASE_URL / ANTHROPIC_BASE_URL in the app containers.
    #[arg(long)]
    no_sidecar_app_env: bool,
    /// CA (PEM file) injected sidecars trust for the control plane's gRPC certificate. Implied
    /// by --tls-from-webhook.
    #[arg(long)]
    sidecar_control_plane_ca: Option<PathBuf>,
    /// Do not project a service-account token (audience `spillway`) into injected sidecars.
    #[arg(long)]
    no_sidecar_identity_token: bool,
    /// Environment variables a pushed snapshot may make an injected sidecar use as credentials
    /// (comma-separated; `*` matches any run of characters).
    #[arg(long, default_value = "*_API_KEY")]
    sidecar_allow_secret_env: String,
    /// A Secret (in the pod's namespace) with the sidecar's client certificate (tls.crt,
    /// tls.key), for a control plane that requires mutual TLS.
    #[arg(long)]
    sidecar_client_cert_secret: Option<String>,
}

impl Sidecar {
    fn options(&self) -> InjectOptions {
        InjectOptions {
            image: self.sidecar_image.clone(),
            pull_policy: self.sidecar_pull_policy.clone(),
            control_plane: self.sidecar_control_plane.clone(),
            port: self.sidecar_port,
            cpu: self.sidecar_cpu.clone(),
            memory: self.sidecar_memory.clone(),
            credentials_secret: self.sidecar_credentials_secret.clone(),
            app_env: !self.no_sidecar_app_env,
            control_plane_ca_pem: None,
            identity_token: !self.no_sidecar_identity_token,
            allow_secret_env: self.sidecar_allow_secret_env.clone(),
            client_cert_secret: self.sidecar_client_cert_secret.clone(),
        }
    }

    /// The options with the CA sidecars trust read from its file, if one is named.
    fn options_with_ca(&self) -> anyhow::Result<InjectOptions> {
        let mut o = self.options();
        if let Some(f) = &self.sidecar_control_plane_ca {
            o.control_plane_ca_pem =
                Some(std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?);
        }
        Ok(o)
    }
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Serve(args) => {
            // Colours only on a terminal: container logs (`kubectl logs`) get plain text. RUST_LOG
            // filters as in the sidecar.
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
            match tokio::runtime::Runtime::new().map(|rt| rt.block_on(serve(*args))) {
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
        Command::Inject { file, sidecar } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("spillway-control: cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match inject::manifest::inject(&sidecar.options(), &text) {
                Ok((yaml, warnings)) => {
                    warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("spillway-control: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crd => {
            print!("{}", spillway_controlplane::crd::definition_yaml());
            ExitCode::SUCCESS
        }
        Command::Check { files } => {
            let (report, ok) = spillway_controlplane::check::check(&files);
            print!("{report}");
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}

async fn serve(a: Serve) -> anyhow::Result<()> {
    let discovery = ads::Discovery::new();
    let state = state::ConfigState::new(discovery.clone());
    let etcd = match a.etcd_endpoints.is_empty() {
        true => None,
        false => Some(
            etcd::Etcd::connect(&etcd::EtcdOptions {
                endpoints: a.etcd_endpoints.clone(),
                prefix: a.etcd_prefix.clone(),
                ca: a.etcd_ca.clone(),
                cert: a.etcd_cert.clone(),
                key: a.etcd_key.clone(),
            })
            .await
            .map_err(anyhow::Error::msg)?,
        ),
    };
    let mut _source = None;
    let mut config_store = None;
    let mut routing_objects = None;
    let seed = |p: &PathBuf| -> anyhow::Result<(spillway_api::config::RoutingConfig, String)> {
        Ok(match p.is_dir() {
            true => (source::load_dir(p)?, format!("directory:{}", p.display())),
            false => (spillway_api::config::load_file(p)?, format!("file:{}", p.display())),
        })
    };
    match (&etcd, &a.config) {
        (None, config) if a.routing_objects => {
            let client = ::kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("--routing-objects needs the Kubernetes API: {e}"))?;
            let ns = a.injector.webhook_namespace.clone();
            let objects = crd_source::CrdConfig::start(client, &ns, state.clone()).await.map_err(anyhow::Error::msg)?;
            if let Some(p) = config {
                let (config, who) = seed(p)?;
                objects.seed(config, &who).await.map_err(anyhow::Error::msg)?;
            }
            routing_objects = Some(objects);
        }
        (Some(etcd), config) => {
            let seed = config.as_ref().map(seed).transpose()?;
            let store = etcd::config::EtcdConfig::start(etcd.clone(), state.clone(), seed);
            config_store = Some(store.await.map_err(anyhow::Error::msg)?);
        }
        (None, Some(dir)) if dir.is_dir() => {
            _source = Some(source::DirSource::start(dir.clone(), state.clone()).map_err(anyhow::Error::msg)?)
        }
        (None, Some(file)) => {
            let cfg = spillway_api::config::load_file(file)?;
            state.set_base(cfg, &format!("file:{}", file.display()), "file")?;
            if a.leader_election_lease.is_some() {
                state.set_owner(state::Owner::ReplicatedFile(file.clone()));
            }
        }
        (None, None) => anyhow::bail!("--config or --etcd-endpoints is required"),
    }
    let grant_ttl = Duration::from_secs(a.grant_ttl_s.max(1));
    let leases = leases::LeasePolicy {
        ttl: grant_ttl,
        delivery_margin: (grant_ttl / 6).min(Duration::from_secs(5)),
        ..Default::default()
    };
    let policy =
        telemetry::TelemetryPolicy { tick: Duration::from_secs(a.tick_s.max(1)), leases, ..Default::default() };
    let telemetry = telemetry::Telemetry::new(state.clone(), policy);
    let _ticks = telemetry.start();
    let shared = match (&etcd, &a.shared_state_configmap) {
        (Some(etcd), _) => Some(shared::Shared {
            demotions: shared::DemotionStore::Etcd(etcd.clone()),
            checkpoint: shared::SharedDoc::Etcd(etcd.clone()),
        }),
        (None, Some(name)) => {
            let namespace = a.injector.webhook_namespace.clone();
            let client = ::kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("shared state: {e}"))?;
            Some(shared::Shared {
                demotions: shared::DemotionStore::Objects(::kube::Api::namespaced(client, &namespace)),
                checkpoint: shared::SharedDoc::ConfigMap {
                    kube: Arc::new(kube::Kube::in_cluster().map_err(|e| anyhow::anyhow!("shared state: {e}"))?),
                    namespace,
                    name: name.clone(),
                },
            })
        }
        (None, None) => None,
    };
    let _shared = shared.map(|s| {
        let t = Some(telemetry.clone());
        tokio::spawn(shared::run(s, state.clone(), t, Duration::from_secs(2)))
    });
    let auth = match (&a.jwt_hs256_secret_file, &a.jwt_rs256_public_key) {
        (Some(f), _) => {
            Some(admin::AdminAuth::hs256(&std::fs::read(f)?).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
        }
        (None, Some(f)) => Some(admin::AdminAuth::rs256_pem(&std::fs::read(f)?).map_err(anyhow::Error::msg)?),
        (None, None) => None,
    };
    // Bound before the campaign, so that the address the leader advertises is the real one.
    let admin_listener = match auth {
        Some(_) => Some(tokio::net::TcpListener::bind(a.admin_listen).await?),
        None => None,
    };
    let incoming = tonic::transport::server::TcpIncoming::bind(a.listen)?.with_keepalive(Some(Duration::from_secs(60)));
    let admin_url = match (&admin_listener, a.advertise_admin_url.as_str()) {
        (_, url) if !url.is_empty() => url.to_owned(),
        // A specific address (not 0.0.0.0) is where the others can reach it.
        (Some(l), _) if !l.local_addr()?.ip().is_unspecified() => format!("http://{}", l.local_addr()?),
        _ => String::new(),
    };
    let grpc_url = match a.advertise_grpc_url.as_str() {
        url if !url.is_empty() => url.to_owned(),
        _ if incoming.local_addr()?.ip().is_unspecified() => String::new(),
        _ => {
            let scheme = if a.tls_cert.is_some() || a.tls_from_webhook { "https" } else { "http" };
            format!("{scheme}://{}", incoming.local_addr()?)
        }
    };
    let advertise = election::Advertised { admin: admin_url, grpc: grpc_url };
    let lease_s = Duration::from_secs(a.leader_lease_s.max(1));
    let timing = |config: election::ElectionConfig| election::ElectionConfig {
        advertise: advertise.clone(),
        duration: lease_s,
        renew_deadline: lease_s * 2 / 3,
        retry: (lease_s / 5).max(Duration::from_millis(100)),
        ..config
    };
    let campaign = match (&etcd, &a.leader_election_lease) {
        (Some(etcd), _) => {
            Some(etcd::election::run(etcd.clone(), timing(election::ElectionConfig::new("", "leader", &a.pod_name))))
        }
        (None, Some(lease)) => {
            let client = ::kube::Client::try_default().await.map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
            Some(election::run(
                client,
                timing(election::ElectionConfig::new(&a.injector.webhook_namespace, lease, &a.pod_name)),
            ))
        }
        (None, None) => None,
    };
    // Live replicas, for the admin views merged across them.
    let _registered = match (&etcd, advertise.admin.is_empty()) {
        (Some(etcd), false) => {
            let me = etcd::replicas::Replica { name: a.pod_name.clone(), url: advertise.admin.clone() };
            Some(etcd::replicas::register(etcd.clone(), me, lease_s))
        }
        (Some(_), true) => {
            tracing::warn!(
                "no admin URL to advertise (--advertise-admin-url): /v1/nodes shows this replica's sidecars only"
            );
            None
        }
        _ => None,
    };
    let election = match campaign {
        Some(e) => {
            telemetry.set_leading(None);
            // Ends with the election, whose task is kept below.
            let following = telemetry.follow(e.leading, e.leader.clone());
            Some((e.task, e.leader, following))
        }
        None => None,
    };

    let health = tokio::net::TcpListener::bind(a.health_listen).await?;
    tracing::info!(health_listen = %health.local_addr()?, "health checks listening");
    let health_router = health::router(discovery.clone());
    tokio::spawn(listen::serve(health, health_router, listen::Timeouts::API));

    if let (Some(auth), Some(admin_listener)) = (auth, admin_listener) {
        let admin = match &election {
            Some((_, url, _)) => {
                admin::Admin::replica(discovery.clone(), state.clone(), telemetry.clone(), auth, url.clone())
            }
            None => admin::Admin::new(discovery.clone(), state.clone(), telemetry.clone(), auth),
        };
        if let Some(store) = &config_store {
            admin.write_through(store.clone());
        }
        if let Some(objects) = &routing_objects {
            admin.write_through_crd(objects.clone());
        }
        if let Some(etcd) = &etcd {
            admin.merge_views(forward::Peers::new(etcd.clone(), &a.pod_name));
        } else if let Some(service) = &a.peer_service {
            let client = ::kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("--peer-service needs the Kubernetes API: {e}"))?;
            let api = ::kube::Api::namespaced(client, &a.injector.webhook_namespace);
            let source = forward::PeerSource::Service { api, service: service.clone() };
            admin.merge_views(forward::Peers::from(source, &a.pod_name));
        }
        let router = admin.router();
        tracing::info!(admin_listen = %admin_listener.local_addr()?, "admin API listening");
        tokio::spawn(listen::serve(admin_listener, router, listen::Timeouts::API));
    } else {
        tracing::warn!("no JWT key given: the admin API is off");
    }
    let webhook_cert = match a.injector.webhook_listen {
        Some(addr) => Some(start_injector(addr, &a.injector, a.tls_from_webhook, routing_objects.clone()).await?),
        None => None,
    };

    let tls = match (&a.tls_cert, &a.tls_key, webhook_cert.filter(|_| a.tls_from_webhook)) {
        (Some(cert), Some(key), _) => {
            Some(spillway_controlplane::tls::server_config(cert, key, a.client_ca.as_deref())?)
        }
        (_, _, Some(w)) => Some(spillway_controlplane::tls::from_pem(&w.cert_pem, &w.key_pem)),
        _ => None,
    };
    if tls.is_none() && !a.listen.ip().is_loopback() {
        if !a.insecure_plaintext {
            anyhow::bail!(
                "refusing to serve gRPC in plaintext on {}: give --tls-cert/--tls-key or --tls-from-webhook, or --insecure-plaintext on a trusted network",
                a.listen
            );
        }
        tracing::warn!(listen = %a.listen, "gRPC in PLAINTEXT (--insecure-plaintext): sidecar tokens and routing snapshots cross the network unencrypted");
    }
    let auth = if a.insecure_self_declared_identity {
        tracing::warn!(
            "sidecar identities are SELF-DECLARED (--insecure-self-declared-identity): anyone who reaches the gRPC port can report for any node"
        );
        identity::Authenticator::SelfDeclared
    } else {
        let kube = kube::Kube::in_cluster().map_err(|e| {
            anyhow::anyhow!("sidecars are authenticated with TokenReview, which needs the Kubernetes API: {e} (outside Kubernetes: --insecure-self-declared-identity)")
        })?;
        let metrics = discovery.metrics().clone();
        identity::Authenticator::TokenReview(Box::new(identity::TokenReviewer::new(
            kube,
            metrics,
            a.sidecar_namespaces.clone(),
        )))
    };
    let auth = Arc::new(auth);

    let version = discovery.current().map(|s| s.version.clone()).unwrap_or_default();
    tracing::info!(%version, listen = %incoming.local_addr()?, tls = tls.is_some(), "serving routing snapshots");
    // Dead peers are found by pings; a connection lives at most half an hour (sidecars resume by
    // version, and a scaled-out control plane gets its share of them); a TLS handshake gets 10 s.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(16))
        .max_connection_age(Duration::from_secs(1800))
        .max_connection_age_grace(Duration::from_secs(30));
    if let Some(tls) = tls {
        server = server.tls_config(tls.timeout(Duration::from_secs(10)))?;
    }
    server
        .add_service(ads::DiscoveryService::server(discovery, auth.clone()))
        .add_service(telemetry::TelemetryService::server(telemetry, auth))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The injector's HTTPS server, with its certificate from files or bootstrapped self-signed;
/// returns that certificate, which `--tls-from-webhook` serves gRPC with (its CA then goes to
/// every injected sidecar).
async fn start_injector(
    addr: SocketAddr,
    i: &Injector,
    ca_to_sidecars: bool,
    routing_objects: Option<Arc<crd_source::CrdConfig>>,
) -> anyhow::Result<webhook::WebhookCert> {
    let mut opts = i.sidecar.options_with_ca()?;
    let served: webhook::WebhookCert;
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match (&i.webhook_cert, &i.webhook_key) {
        (Some(c), Some(k)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            };
            // cert-manager puts the issuing CA beside the certificate.
            let ca = c.with_file_name("ca.crt");
            served = webhook::WebhookCert {
                ca_pem: if ca.exists() { read(&ca)? } else { String::new() },
                cert_pem: read(c)?,
                key_pem: read(k)?,
            };
            Arc::new(webhook::FileCert::load(c.clone(), k.clone()).map_err(anyhow::Error::msg)?)
        }
        _ if i.webhook_self_signed => {
            let kube = kube::Kube::in_cluster().map_err(anyhow::Error::msg)?;
            let (svc, ns) = (&i.webhook_service, &i.webhook_namespace);
            let names = vec![format!("{svc}.{ns}.svc"), format!("{svc}.{ns}.svc.cluster.local"), format!("{svc}.{ns}")];
            let cert = kube::certificate(&kube, ns, &i.webhook_secret, &names).await.map_err(anyhow::Error::msg)?;
            let key = webhook::certified_key(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
                .map_err(anyhow::Error::msg)?;
            served = cert.clone();
            // The webhook configuration may be created after this pod starts: keep trying.
            let mut configurations = vec![(kube::WebhookKind::Mutating, i.webhook_configuration.clone())];
            if let Some(v) = &i.webhook_validating_configuration {
                configurations.push((kube::WebhookKind::Validating, v.clone()));
            }
            tokio::spawn(async move {
                let mut wait = Duration::from_secs(1);
                loop {
                    let mut left = Vec::new();
                    for (kind, name) in configurations.drain(..) {
                        if let Err(e) = kube::publish_ca_bundle_to(&kube, kind, &name, &cert.ca_pem).await {
                            tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "cannot publish the webhook CA yet");
                            left.push((kind, name));
                        }
                    }
                    configurations = left;
                    if configurations.is_empty() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            });
            Arc::new(webhook::StaticCert(key))
        }
        _ => anyhow::bail!("--webhook-listen needs --webhook-cert/--webhook-key or --webhook-self-signed"),
    };
    if ca_to_sidecars && opts.control_plane_ca_pem.is_none() {
        if served.ca_pem.is_empty() {
            anyhow::bail!(
                "--tls-from-webhook: no ca.crt beside --webhook-cert to give sidecars; name one with --sidecar-control-plane-ca"
            );
        }
        opts.control_plane_ca_pem = Some(served.ca_pem.clone());
    }
    let opts = Arc::new(opts);
    let router = axum::Router::new()
        .route(
            "/inject",
            axum::routing::post(move |body: axum::body::Bytes| {
                let opts = opts.clone();
                async move { inject::serve(&opts, body).await }
            }),
        )
        .route(
            "/validate-routing",
            axum::routing::post(move |body: axum::body::Bytes| {
                let objects = routing_objects.clone();
                async move {
                    use axum::response::IntoResponse;
                    match spillway_controlplane::crd_admission::review(&body, objects.as_deref()) {
                        Ok(r) => axum::Json(r).into_response(),
                        Err(e) => (axum::http::StatusCode::BAD_REQUEST, e).into_response(),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "sidecar injector listening");
    tokio::spawn(webhook::serve(listener, webhook::acceptor(resolver), router));
    Ok(served)
}
