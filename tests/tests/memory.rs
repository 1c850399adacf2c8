//! Memory per request, measured by this test binary's own allocator: what one request can make
//! the sidecar hold is bounded relative to its body, whatever its shape. The regression: one
//! 8 MiB request of 250,000 tiny messages cost +535 MiB when translated (66× its size).

use serde_json::json;
use spillway_tests::harness::{TestClient, TestSidecar};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated above the level before `f` ran.
async fn peak_during<F: std::future::Future>(f: F) -> (usize, F::Output) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f.await;
    (PEAK.load(Relaxed) - base, out)
}

/// Peak growth over body size allowed for any one request: the parse budget (8× + 1 MiB), the
/// body itself held by client and server, and the translated copy.
const BOUND: f64 = 14.0;

#[tokio::test]
async fn any_request_costs_a_bounded_multiple_of_its_body() {
    // Nothing listens upstream: what is measured is the sidecar's own reading, parsing and
    // translating, not a fake provider's (it runs in this process too).
    let yaml = "endpoints:
  oa: { provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }
  an: { provider: anthropic, base_url: \"http://127.0.0.1:9\", model: m, auth: { kind: none } }
features:
  same: { hierarchy: [oa] }
  translated: { hierarchy: [an] }
";
    let sc = TestSidecar::start_with(yaml, |o| o.max_body_bytes = 16 << 20).await.unwrap();
    let client = TestClient::default();
    let cases = [
        // 250,000 tiny messages: refused before they cost more than the budget.
        ("translated", 250_000, "a".to_owned(), 413),
        ("same", 250_000, "a".to_owned(), 413),
        // A real long conversation and one huge message: taken (503: nothing upstream).
        ("translated", 4_000, "word ".repeat(100), 503),
        ("translated", 1, "w ".repeat(4_000_000), 503),
        ("same", 1, "w ".repeat(4_000_000), 503),
    ];
    for (feature, n, content, status) in cases {
        let messages: Vec<_> = (0..n).map(|_| json!({"role": "user", "content": content})).collect();
        let body = json!({"model": feature, "messages": messages}).to_string();
        let len = body.len();
        let url = sc.url("/v1/chat/completions");
        let (peak, reply) = peak_during(client.post_json(&url, &[], body)).await;
        let reply = reply.unwrap();
        let ratio = peak as f64 / len as f64;
        eprintln!("{feature}, {n} messages: body {len} B, peak +{peak} B = {ratio:.1}×, status {}", reply.status);
        assert_eq!(reply.status, status, "{feature} {n}: {}", reply.text());
        assert!(ratio <= BOUND || peak < (8 << 20), "{feature} {n}: {ratio:.1}× its body");
        if status == 413 {
            let e = reply.json();
            assert_eq!(e["error"]["code"], "request_too_complex", "{e}");
        }
    }
}

/// Live bytes a sidecar holds per configured endpoint: large configs (many backups, many regions)
/// must fit the injected sidecar's 64 MiB.
#[tokio::test]
async fn an_endpoint_costs_little() {
    let config = |n: usize| {
        let mut y = String::from("endpoints:\n");
        for i in 0..n {
            y += &format!("  e{i}: {{ provider: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", model: m }}\n");
        }
        y += "breakers:\n  b: { window_s: 60, min_requests: 5, error_rate: 0.5 }\nfeatures:\n";
        for i in 0..n {
            y += &format!("  f{i}: {{ breaker: b, hierarchy: [e{i}] }}\n");
        }
        y
    };
    let before = LIVE.load(Relaxed);
    let one = TestSidecar::start(&config(1)).await.unwrap();
    let with_one = LIVE.load(Relaxed) - before;
    let many = TestSidecar::start(&config(201)).await.unwrap();
    let with_many = LIVE.load(Relaxed) - before - with_one;
    let per_endpoint = (with_many - with_one) / 200;
    eprintln!("one endpoint: {with_one} B; 201: {with_many} B; {per_endpoint} B per endpoint");
    // It was 142 KiB: nine histograms allocated up front and a root store parsed per endpoint.
    assert!(per_endpoint < 16 * 1024, "{per_endpoint} B per endpoint");
    drop((one, many));
}
