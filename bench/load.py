#!/usr/bin/env python3
"""spillway's load harness: the sidecar against a direct baseline, in one run.

    bash bench/run.sh            # ~3 minutes; bench/run.sh --quick for a smoke run

Starts the fake provider, a standalone sidecar in front of it and `bare-forwarder` (the same
tokio/hyper stack forwarding bytes and doing nothing else: the cost of the extra loopback hop
alone), then drives the fake directly, through the forwarder and through the sidecar with `oha`,
at the same rates and concurrency, and reports what the sidecar adds:

- latency percentiles at fixed rates (non-streaming), added and as a ratio to direct;
- sidecar CPU per request (from /proc, at 1,000 req/s);
- the highest rate each sustains (fixed concurrency, no rate limit), non-streaming and streaming
  (20 chunks);
- time to first token, added (stream-probe: the first SSE `data:` line);
- the sidecar's RSS idle and with 1,000 streams open at once.

Results go to docs/benchmarks/results.json and a plot to docs/benchmarks/latency.png.
The load generator shares the machine's cores with what it measures: figures are comparable
between direct and sidecar within a run, not with other machines.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
OUT = ROOT / "docs" / "benchmarks"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{url} not ready after {timeout} s")


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def cpu_ms(pid):
    """User + system CPU time of a process so far, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


REPEAT = 1


def oha(url, body, seconds, concurrency, rate=None):
    """One oha measurement, or the median (by p50, or by rate when unlimited) of REPEAT of them."""
    runs = [oha_once(url, body, seconds, concurrency, rate) for _ in range(REPEAT)]
    runs.sort(key=lambda r: r["p50_us"] if rate else r["rps"])
    median = dict(runs[len(runs) // 2])
    median["requests_all_runs"] = sum(r["requests"] for r in runs)
    return median


def oha_once(url, body, seconds, concurrency, rate=None):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(concurrency),
           "-m", "POST", "-H", "content-type: application/json", "-d", json.dumps(body), url]
    if rate:
        cmd[1:1] = ["-q", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    total = sum(int(v) for v in codes.values())
    if total == 0 or ok != total:
        sys.exit(f"oha {url}: not every answer was 200: {codes} {r.get('errorDistribution')}")
    p = r["latencyPercentiles"]
    us = lambda k: round(p[k] * 1e6, 1)
    return {"rps": round(r["summary"]["requestsPerSec"], 1), "requests": total,
            "p50_us": us("p50"), "p90_us": us("p90"), "p99_us": us("p99"), "p99.9_us": us("p99.9")}


def measured(pid, url, body, seconds, concurrency, rate=None):
    """An oha measurement and the CPU the process `pid` spent per request during it."""
    before = cpu_ms(pid)
    r = oha(url, body, seconds, concurrency, rate)
    return r, round((cpu_ms(pid) - before) / r["requests_all_runs"], 4)


def probe(mode, url, model, requests=2000, concurrency=4):
    cmd = [str(RELEASE / "stream-probe"), mode, "--url", url, "--model", model,
           "--requests", str(requests), "--concurrency", str(concurrency)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs: a smoke test of the harness")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each measurement N times and keep the median "
                         "(this VM varies ±30 %% between runs)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    seconds = 3 if args.quick else 10
    rates = [500, 1000, 2000] if args.quick else [250, 500, 1000, 2000, 4000]

    fake_port, sidecar_port, bare_port = free_port(), free_port(), free_port()
    fake = subprocess.Popen([str(RELEASE / "fake-provider"), "--listen", f"127.0.0.1:{fake_port}",
                             "--chunks", "20"], stderr=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp(prefix="spillway-bench-")
    config = Path(tmp) / "routing.yaml"
    base = f"http://127.0.0.1:{fake_port}/v1"
    config.write_text(f"""endpoints:
  fake: {{ provider: openai_compatible, base_url: "{base}", model: m }}
  # The same fake pacing its chunks 250 ms apart: 20 chunks keep a stream open for 5 s.
  slow: {{ provider: openai_compatible, base_url: "{base}", model: m, headers: {{ x-fake-chunk-interval-ms: "250" }} }}
features:
  m: {{ hierarchy: [fake], attempt_timeout_ms: 30000, deadline_ms: 60000 }}
  hold: {{ hierarchy: [slow], attempt_timeout_ms: 30000, deadline_ms: 60000 }}
""")
    log = open(Path(tmp) / "sidecar.log", "w")
    sidecar = subprocess.Popen([str(RELEASE / "spillway-proxy"), "--config", str(config),
                                "--listen", f"127.0.0.1:{sidecar_port}", "--no-watch"], stderr=log)
    bare = subprocess.Popen([str(RELEASE / "bare-forwarder"), "--listen", f"127.0.0.1:{bare_port}",
                             "--upstream", f"127.0.0.1:{fake_port}"])
    results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores", "seconds_per_run": seconds}
    try:
        wait_port(fake_port)
        wait_ready(f"http://127.0.0.1:{sidecar_port}/readyz")
        wait_port(bare_port)
        direct = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
        hop = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        via = f"http://127.0.0.1:{sidecar_port}/v1/chat/completions"
        time.sleep(0.5)
        results["rss_idle_mb"] = round(rss_mb(sidecar.pid), 1)
        # Warm both paths (connection pools, allocator) before measuring.
        for url in (direct, hop, via):
            oha(url, CHAT, 1, 16)

        results["fixed_rate"] = []
        for rate in rates:
            d = oha(direct, CHAT, seconds, 32, rate)
            b, b_cpu = measured(bare.pid, hop, CHAT, seconds, 32, rate)
            s, cpu = measured(sidecar.pid, via, CHAT, seconds, 32, rate)
            row = {"rate": rate, "direct": d, "bare_forwarder": b, "sidecar": s,
                   "hop_p50_us": round(b["p50_us"] - d["p50_us"], 1), "hop_p99_us": round(b["p99_us"] - d["p99_us"], 1),
                   "sidecar_cpu_ms_per_request": cpu, "bare_forwarder_cpu_ms_per_request": b_cpu,
                   "added_p50_us": round(s["p50_us"] - d["p50_us"], 1), "added_p99_us": round(s["p99_us"] - d["p99_us"], 1)}
            results["fixed_rate"].append(row)
            print(f"{rate:>6} req/s  p50 {d['p50_us']:>8} → {s['p50_us']:>8} µs (+{row['added_p50_us']})   "
                  f"p99 {d['p99_us']:>8} → {s['p99_us']:>8} µs (+{row['added_p99_us']})   "
                  f"(bare hop +{row['hop_p50_us']} / +{row['hop_p99_us']})   "
                  f"CPU ms/req sidecar {cpu}, bare {b_cpu}", flush=True)

        stream = dict(CHAT, stream=True)
        for name, body in [("max_rps", CHAT), ("max_streams_per_s", stream)]:
            d = oha(direct, body, seconds, 64)
            b, b_cpu = measured(bare.pid, hop, body, seconds, 64)
            s, cpu = measured(sidecar.pid, via, body, seconds, 64)
            results[name] = {"direct": d["rps"], "bare_forwarder": b["rps"], "sidecar": s["rps"],
                             "ratio": round(s["rps"] / d["rps"], 3), "ratio_to_bare": round(s["rps"] / b["rps"], 3),
                             "sidecar_cpu_ms_per_request": cpu, "bare_forwarder_cpu_ms_per_request": b_cpu}
            print(f"{name}: direct {d['rps']}, bare forwarder {b['rps']}, sidecar {s['rps']} "
                  f"({results[name]['ratio']}× direct, {results[name]['ratio_to_bare']}× bare); "
                  f"CPU ms/req sidecar {cpu}, bare {b_cpu}", flush=True)

        d = probe("ttft", direct, "m")
        b = probe("ttft", hop, "m")
        s = probe("ttft", via, "m")
        results["ttft"] = {"direct_us": d["ttft_us"], "bare_forwarder_us": b["ttft_us"], "sidecar_us": s["ttft_us"],
                           "added_p50_us": s["ttft_us"]["p50"] - d["ttft_us"]["p50"],
                           "added_p99_us": s["ttft_us"]["p99"] - d["ttft_us"]["p99"]}
        print(f"ttft: p50 {d['ttft_us']['p50']} → {s['ttft_us']['p50']} µs (bare {b['ttft_us']['p50']}), "
              f"p99 {d['ttft_us']['p99']} → {s['ttft_us']['p99']} µs (bare {b['ttft_us']['p99']})", flush=True)

        peak = [0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(sidecar.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        held = probe("hold", via, "hold", concurrency=1000)
        done.set()
        sampler.join()
        results["streams_open"] = {"streams": held["streams"], "errors": held["errors"],
                                   "rss_peak_mb": round(peak[0], 1)}
        print(f"rss: idle {results['rss_idle_mb']} MB, peak with {held['streams']} open streams {round(peak[0], 1)} MB", flush=True)
    finally:
        for p in (sidecar, bare, fake):
            p.terminate()
            p.wait()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, OUT / "latency.png")
    print(f"wrote {OUT / 'results.json'} and {OUT / 'latency.png'}")


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = results["fixed_rate"]
    rates = [r["rate"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, style in [("p50_us", "-"), ("p99_us", "--")]:
        for side, color in [("direct", "tab:blue"), ("bare_forwarder", "tab:gray"), ("sidecar", "tab:orange")]:
            ax.plot(rates, [r[side][key] / 1000 for r in rows], style, color=color, marker="o",
                    label=f"{side.replace('_', ' ')} {key[:-3]}")
    ax.set_xscale("log")
    ax.set_xticks(rates, [str(r) for r in rates])
    ax.set_xlabel("offered load (requests/s, non-streaming, 32 connections)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"spillway sidecar vs direct to the same fake provider ({results['date']}, {results['machine']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
