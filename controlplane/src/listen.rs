//! The control plane's HTTP listeners (admin API, health port, injector webhook) with timeouts
//! on everything a client controls: the TLS handshake, the request head (which also bounds how
//! long an idle keep-alive connection is kept), and the whole request body. Without them a
//! thousand half-sent requests hold a thousand connections open for ever — and the webhook runs
//! with `failurePolicy: Fail`, so holding its connections blocks pod creation.

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over each part of a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake.
    pub handshake: Duration,
    /// From the connection (or the previous response) to the end of the request head.
    pub header: Duration,
    /// The whole request body.
    pub body: Duration,
}

impl Timeouts {
    /// The admin API and the health port: people and probes, generous.
    pub const API: Timeouts =
        Timeouts { handshake: Duration::from_secs(10), header: Duration::from_secs(30), body: Duration::from_secs(60) };
    /// The webhook: the API server sends a whole AdmissionReview at once and waits at most
    /// `timeoutSeconds` (10 by default) itself.
    pub const WEBHOOK: Timeouts =
        Timeouts { handshake: Duration::from_secs(5), header: Duration::from_secs(5), body: Duration::from_secs(5) };
}

fn builder(t: Timeouts) -> Builder<TokioExecutor> {
    // Timeouts are set just below.
    #[allow(clippy::disallowed_methods)]
    let mut b = Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(t.header);
    // HTTP/2 has no head timeout; pings find peers that vanished.
    b.http2().timer(TokioTimer::new()).keep_alive_interval(t.header).keep_alive_timeout(t.header);
    b
}

/// Every request body gets `t.body` to arrive in full.
fn with_body_deadline(router: Router, t: Timeouts) -> Router {
    router.layer(axum::middleware::map_request(move |req: axum::extract::Request| async move {
        req.map(|b| Body::new(Deadline { inner: b, sleep: Box::pin(tokio::time::sleep(t.body)), limit: t.body }))
    }))
}

async fn accept(listener: &TcpListener, what: &str) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `router` over plain HTTP until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router, t: Timeouts) {
    let router = with_body_deadline(router, t);
    let builder = builder(t);
    loop {
        let (tcp, _) = accept(&listener, "http").await;
        let (builder, service) = (builder.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// Serves `router` over TLS until the task is dropped.
pub async fn serve_tls(listener: TcpListener, tls: TlsAcceptor, router: Router, t: Timeouts) {
    let router = with_body_deadline(router, t);
    let builder = builder(t);
    loop {
        let (tcp, peer) = accept(&listener, "https").await;
        let (tls, builder, service) = (tls.clone(), builder.clone(), TowerToHyperService::new(router.clone()));
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(t.handshake, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            let msg = format!("the request body did not arrive within {} s", self.limit.as_secs());
            return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, msg)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
