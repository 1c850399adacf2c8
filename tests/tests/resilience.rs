//! The resilience scenarios of `spillway_tests::scenario` — surge, outage, brownout with and
//! without hedging, flapping, recovery — played against an in-process sidecar on tokio's paused
//! clock: the same timelines `bench/scenarios.sh` plays against the release binary in real time,
//! here deterministic. Each test fails with its score card and timeline.

use spillway_tests::harness::TestSidecar;
use spillway_tests::scenario::{self, Sidecar};

async fn play(name: &str) {
    let s = scenario::all().into_iter().find(|s| s.name == name).expect("a known scenario");
    let report = scenario::run(&s, |yaml| async move {
        let sc = TestSidecar::start(&yaml).await?;
        Ok((Sidecar { url: format!("http://{}", sc.sidecar.addr) }, sc))
    })
    .await
    .unwrap();
    assert!(report.passed(), "{}\n{}", report.card(), report.timeline_text());
}

#[tokio::test(start_paused = true)]
async fn a_surge_past_the_pt_ceiling_spills_and_drops_nothing() {
    play("surge").await;
}

#[tokio::test(start_paused = true)]
async fn a_hard_outage_trips_within_a_second_and_drops_nothing() {
    play("outage").await;
}

#[tokio::test(start_paused = true)]
async fn a_brownout_is_hedged_under_half_a_second() {
    play("brownout-hedged").await;
}

#[tokio::test(start_paused = true)]
async fn a_brownout_without_hedging_moves_traffic_within_two_seconds() {
    play("brownout").await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_primary_trips_at_most_once_per_flap() {
    play("flapping").await;
}

#[tokio::test(start_paused = true)]
async fn recovery_is_a_staged_ramp_that_drops_nothing() {
    play("recovery").await;
}
