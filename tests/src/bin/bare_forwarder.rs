//! `bare-forwarder`: the floor for the load harness. It forwards every request unchanged to one
//! upstream with the same stack the sidecar uses (tokio, hyper server, pooled hyper-util client)
//! and nothing else — no parsing, routing, breakers, metrics or logs. What the sidecar adds over
//! direct, minus what this adds, is the cost of spillway's own work; what this adds is the cost
//! of one more loopback hop on the machine.

use clap::Parser;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;

/// The sidecar's allocator, so the floor differs from it only by spillway's own work.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "bare-forwarder")]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream, e.g. `127.0.0.1:9101`.
    #[arg(long)]
    upstream: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    // Like the sidecar's connector: no Nagle delay on the upstream side either.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), a.upstream);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let client = client.clone();
                async move {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    *req.uri_mut() = format!("http://{upstream}{pq}").parse().expect("a valid URI");
                    let resp = match client.request(req).await {
                        Ok(r) => r.map(|b| b.boxed()),
                        Err(e) => http::Response::builder()
                            .status(502)
                            .body(
                                http_body_util::Full::new(bytes::Bytes::from(e.to_string()))
                                    .map_err(|e| match e {})
                                    .boxed(),
                            )
                            .expect("a valid response"),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            // The benchmark floor: a hop with no logic at all, timeouts included.
            #[allow(clippy::disallowed_methods)]
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
