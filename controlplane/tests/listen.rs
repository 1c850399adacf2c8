//! The control plane's HTTP listeners time out what a client controls (tokio's paused clock):
//! the webhook's tight limits close half-sent heads and stalled bodies in seconds, so holding
//! its connections cannot block pod creation.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use spillway_controlplane::listen::{Timeouts, serve};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn listener(t: Timeouts) -> std::net::SocketAddr {
    let router = Router::new().route("/inject", post(|b: Bytes| async move { format!("{} bytes", b.len()) }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(l, router, t));
    addr
}

#[tokio::test(start_paused = true)]
async fn webhook_limits_close_half_sent_heads_and_stalled_bodies_in_seconds() {
    let addr = listener(Timeouts::WEBHOOK).await;
    let start = Instant::now();
    let mut heads = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        heads.push(s);
    }
    for s in &mut heads {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
    assert!(start.elapsed() <= Timeouts::WEBHOOK.header + Duration::from_secs(1), "{:?}", start.elapsed());

    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"kind\":").await.unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 4"), "a client error, not a handler run on half a body: {reply}");
    assert!(!reply.contains("bytes"), "{reply}");
    assert!(start.elapsed() <= Timeouts::WEBHOOK.body + Duration::from_secs(1) + Timeouts::WEBHOOK.header);

    // A whole request is served as usual.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).ends_with("2 bytes"));
}
