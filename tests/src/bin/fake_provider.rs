//! `fake-provider`: the scriptable OpenAI-compatible fake as a process, for the quick start and
//! load tests. Flags set the server's defaults; `x-fake-*` request headers override them.

use clap::Parser;
use spillway_tests::fake::{FakeConfig, FakeProvider, Script};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "fake-provider")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9101")]
    listen: SocketAddr,
    /// Shown in replies and in the x-fake-name header.
    #[arg(long, default_value = "fake")]
    name: String,
    /// Delay before the response head, ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Delay before the first stream event (slow first token), ms.
    #[arg(long, default_value_t = 0)]
    ttft_ms: u64,
    /// Content chunks per stream (words per reply).
    #[arg(long, default_value_t = 5)]
    chunks: u32,
    #[arg(long, default_value_t = 0)]
    chunk_interval_ms: u64,
    /// Answer every request with this HTTP error status.
    #[arg(long)]
    status: Option<u16>,
    #[arg(long)]
    retry_after: Option<u64>,
    /// Share of requests answered with --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 500)]
    error_status: u16,
    /// Close every connection before sending a response.
    #[arg(long)]
    reset: bool,
    /// Abort streams after this many content chunks.
    #[arg(long)]
    drop_after: Option<u32>,
    /// Send an error event after this many content chunks.
    #[arg(long)]
    error_after: Option<u32>,
    /// Answer 429 beyond this many requests in flight (a full provisioned endpoint).
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Require `Authorization: Bearer <value of this env var>`.
    #[arg(long)]
    require_key_env: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let script = Script {
        delay: Duration::from_millis(args.delay_ms),
        ttft: Duration::from_millis(args.ttft_ms),
        chunks: args.chunks,
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        status: args.status,
        retry_after: args.retry_after,
        error_rate: args.error_rate,
        error_status: args.error_status,
        reset: args.reset,
        drop_after: args.drop_after,
        error_after: args.error_after,
        max_in_flight: args.max_in_flight,
        hostile: None,
        redirect: None,
        tool: None,
    };
    let require_key = match &args.require_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| anyhow::anyhow!("{var} is not set"))?),
        None => None,
    };
    let config = FakeConfig { name: args.name.clone(), script, record: false, require_key, aws: None, gcp_token: None };
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let fake = FakeProvider::start_on(args.listen, config).await?;
        eprintln!("fake-provider `{}` listening on http://{}/v1", args.name, fake.addr);
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
