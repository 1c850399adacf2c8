//! Timeouts on the sidecar's listener, on tokio's paused clock: half-sent heads, stalled bodies
//! and idle keep-alive connections are closed, so a misbehaving client in the pod cannot pin
//! connections (and their buffers) for ever. The regression: 1,000 half-sent requests stayed
//! open past 40 s.

use spillway_tests::fake::{FakeConfig, FakeProvider};
use spillway_tests::harness::TestSidecar;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn sidecar() -> (TestSidecar, FakeProvider) {
    let fake = FakeProvider::start(FakeConfig::named("up")).await.unwrap();
    let yaml = format!(
        "endpoints:\n  up: {{ provider: openai_compatible, base_url: \"{}\", model: m }}\nfeatures:\n  chat: {{ hierarchy: [up] }}\n",
        fake.base_url()
    );
    let sc = TestSidecar::start_with(&yaml, |o| {
        o.header_timeout = Duration::from_secs(30);
        o.body_timeout = Duration::from_secs(20);
    })
    .await
    .unwrap();
    (sc, fake)
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(start_paused = true)]
async fn half_sent_heads_are_closed_at_the_header_timeout() {
    let (sc, _fake) = sidecar().await;
    let start = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(sc.sidecar.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl").await.unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        until_closed(s).await;
    }
    let took = start.elapsed();
    assert!((Duration::from_secs(30)..Duration::from_secs(32)).contains(&took), "closed after {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_gets_a_408_in_the_callers_format() {
    let (sc, fake) = sidecar().await;
    let mut s = TcpStream::connect(sc.sidecar.addr).await.unwrap();
    let start = Instant::now();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": \"chat\", \"mess")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":"request_timeout""#) && reply.contains("within 20 s"), "{reply}");
    assert!((Duration::from_secs(20)..Duration::from_secs(21)).contains(&start.elapsed()));
    assert!(fake.recorded().is_empty(), "nothing half-read is sent upstream");
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_but_a_busy_one_is_not() {
    let (sc, _fake) = sidecar().await;
    let mut s = TcpStream::connect(sc.sidecar.addr).await.unwrap();
    let body = r#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Requests 25 s apart on one connection: each one within the limit, the connection lives.
    for _ in 0..3 {
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0; 8192];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_secs(25)).await;
    }
    let idle_from = Instant::now();
    until_closed(&mut s).await;
    assert!(idle_from.elapsed() <= Duration::from_secs(6), "30 s after the last reply: {:?}", idle_from.elapsed());
}
