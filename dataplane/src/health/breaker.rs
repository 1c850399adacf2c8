//! The circuit breaker of one endpoint (docs/design.md §4): CLOSED → OPEN → PARTIAL-OPEN → CLOSED.
//!
//! - CLOSED: all traffic. Trips to OPEN when, with at least `min_requests` in the window, the
//!   error rate, the slow-first-token rate, the slow-total rate or the slow-per-token rate
//!   reaches its threshold; or, whatever the volume, after `consecutive_failures` bad attempts in
//!   a row (failed, or slow by a slow rule), so a dead endpoint opens in a handful of requests.
//!   Throttling is counted but is no failure: it is a capacity signal, handled by spillover.
//!
//! Each attempt is judged by the yardstick that fits it: a first-token time only for streams (a
//! whole reply has none of its own), the total time for both, and the time per output token so
//! a long answer is not slow for being long.
//! - OPEN for `open_for_s`, doubled on each consecutive re-trip up to [`MAX_OPEN_FACTOR`]×.
//! - PARTIAL-OPEN: admits `ramp.start` of the traffic the endpoint would otherwise get; each
//!   healthy `ramp.step_s` multiplies the share by `ramp.factor`; at 100 % it closes. An
//!   unhealthy step, or a ramp still open after `ramp.max_s`, re-opens it.
//!
//! Time comes from tokio's clock, so every transition is testable on paused time.

use spillway_api::config::BreakerPolicy;
use spillway_api::window::{Counts, Rule, Window};
use tokio::time::{Duration, Instant};

/// The longest OPEN period, as a multiple of `open_for_s`.
pub const MAX_OPEN_FACTOR: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ErrorRate,
    SlowFirstToken,
    SlowTotal,
    SlowTpot,
    /// `consecutive_failures` attempts in a row failed or were slow.
    ConsecutiveFailures,
    /// A PARTIAL-OPEN step went bad.
    UnhealthyStep,
    /// The ramp did not reach 100 % within `ramp.max_s`.
    StuckRamp,
    /// The control plane opened the endpoint fleet-wide (its merged view tripped the policy).
    Fleet,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Closed,
    Open { until: Instant },
    PartialOpen { share: f64, step_started: Instant, ramp_started: Instant },
}

impl State {
    pub fn phase(&self) -> Phase {
        match self {
            State::Closed => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::PartialOpen { .. } => Phase::PartialOpen,
        }
    }

    pub fn name(&self) -> &'static str {
        self.phase().name()
    }
}

/// A [`State`] without its timers: what transitions, metrics and logs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    PartialOpen,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::PartialOpen => "partial_open",
        }
    }
}

/// One finished attempt, as the breaker sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub failed: bool,
    pub throttled: bool,
    /// Time to the first token: streams only.
    pub ttft: Option<Duration>,
    pub total: Duration,
    /// The longest pause between two events of a stream.
    pub max_gap: Option<Duration>,
    /// Output tokens the reply reported, for the time-per-token rule.
    pub output_tokens: Option<u64>,
}

impl Observation {
    /// Time per output token: after the first for a stream (its first token is judged on its
    /// own), over the whole reply otherwise. `None` without enough tokens to say.
    pub fn tpot(&self) -> Option<Duration> {
        let tokens = self.output_tokens?;
        match self.ttft {
            Some(ttft) if tokens >= 2 => {
                Some(self.total.saturating_sub(ttft) / u32::try_from(tokens - 1).unwrap_or(u32::MAX))
            }
            None if tokens >= 1 => Some(self.total / u32::try_from(tokens).unwrap_or(u32::MAX)),
            _ => None,
        }
    }
}

/// Which yardstick an attempt still waiting for its reply is past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowMark {
    /// A stream still without its first token past `slow_ttft.over_ms`.
    FirstToken,
    /// A whole reply still not back past `slow_total.over_ms`.
    Total,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub reason: Option<Reason>,
}

pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    window: Window<Counts>,
    /// Counts of the current PARTIAL-OPEN step.
    step: Counts,
    /// Re-trips since the last time the breaker closed.
    trips: u32,
    reason: Option<Reason>,
    /// Admission credit in PARTIAL-OPEN: each request planned adds `share`; a whole credit admits
    /// one, and is spent only when an attempt is actually sent (`spend`), so a probe planned
    /// behind a tier that answered is not lost. Capped, so a long wait does not bank a burst.
    /// Deterministic, so a ramp of 5 % admits exactly one request in twenty.
    credit: f64,
    /// Bad attempts in a row (failed or slow), for `consecutive_failures`.
    streak: u32,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, now: Instant) -> Self {
        let window = Window::new(policy.window_s, now);
        Breaker {
            policy,
            state: State::Closed,
            window,
            step: Counts::default(),
            trips: 0,
            reason: None,
            credit: 0.0,
            streak: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    pub fn window(&self, now: Instant) -> Counts {
        self.window.totals(now)
    }

    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    fn counts(&self, o: &Observation) -> Counts {
        let slow = |rule: &Option<spillway_api::config::SlowRule>, d: Option<Duration>| {
            u64::from(rule.as_ref().is_some_and(|r| d.is_some_and(|d| d > Duration::from_millis(r.over_ms))))
        };
        if o.throttled {
            return Counts { throttled: 1, ..Counts::default() };
        }
        Counts {
            requests: 1,
            errors: u64::from(o.failed),
            throttled: 0,
            slow_ttft: slow(&self.policy.slow_ttft, o.ttft),
            slow_total: slow(&self.policy.slow_total, (!o.failed).then_some(o.total)),
            slow_tpot: slow(&self.policy.slow_tpot, o.tpot().filter(|_| !o.failed)),
        }
    }

    /// Which rule, if any, these counts break. `min_requests` guards the CLOSED window only:
    /// a ramp step is small by design.
    fn verdict(&self, c: &Counts, min_requests: u64) -> Option<Reason> {
        Some(match c.broken_rule(&self.policy, min_requests)? {
            Rule::ErrorRate => Reason::ErrorRate,
            Rule::SlowFirstToken => Reason::SlowFirstToken,
            Rule::SlowTotal => Reason::SlowTotal,
            Rule::SlowTpot => Reason::SlowTpot,
        })
    }

    fn open(&mut self, now: Instant, reason: Reason) -> Transition {
        let from = self.state.phase();
        let factor = 2u32.saturating_pow(self.trips).min(MAX_OPEN_FACTOR);
        self.trips = self.trips.saturating_add(1);
        self.state =
            State::Open { until: now + Duration::from_secs(u64::from(self.policy.open_for_s) * u64::from(factor)) };
        self.reason = Some(reason);
        self.window.clear();
        self.step = Counts::default();
        self.streak = 0;
        Transition { from, to: Phase::Open, reason: Some(reason) }
    }

    /// Opens the endpoint on the control plane's word for at least `open_for`. Not a local trip:
    /// it does not lengthen later local OPEN periods. When it ends the usual ramp follows.
    pub fn fleet_open(&mut self, now: Instant, open_for: Duration) -> Option<Transition> {
        let until = now + open_for;
        let from = self.state.phase();
        match self.state {
            State::Open { until: u } if u >= until => return None,
            State::Open { .. } => {
                self.state = State::Open { until };
                self.reason = Some(Reason::Fleet);
                return None;
            }
            _ => {}
        }
        self.state = State::Open { until };
        self.reason = Some(Reason::Fleet);
        self.window.clear();
        self.step = Counts::default();
        Some(Transition { from, to: Phase::Open, reason: Some(Reason::Fleet) })
    }

    /// Whether the endpoint is OPEN on the control plane's word (not a local trip).
    pub fn is_fleet_open(&self) -> bool {
        self.reason == Some(Reason::Fleet) && matches!(self.state, State::Open { .. })
    }

    /// Ends a fleet-wide open early: the ramp starts now.
    pub fn fleet_release(&mut self, now: Instant) -> Vec<Transition> {
        if let (State::Open { until }, Some(Reason::Fleet)) = (&mut self.state, self.reason)
            && *until > now
        {
            *until = now;
        }
        self.tick(now)
    }

    /// When an attempt still waiting counts as slow, if the policy has a rule for its kind: the
    /// first token for a stream, the whole reply otherwise.
    pub fn slow_after(&self, stream: bool) -> Option<(Duration, SlowMark)> {
        let (rule, mark) = if stream {
            (&self.policy.slow_ttft, SlowMark::FirstToken)
        } else {
            (&self.policy.slow_total, SlowMark::Total)
        };
        rule.as_ref().map(|r| (Duration::from_millis(r.over_ms), mark))
    }

    /// Records an attempt still waiting past its slow mark: it is slow already, and waiting for
    /// it to finish would let a stalled endpoint keep its traffic. Its final outcome is then
    /// recorded with [`Breaker::record_rest`].
    pub fn record_slow_in_flight(&mut self, now: Instant, mark: SlowMark) -> Option<Transition> {
        let c = match mark {
            SlowMark::FirstToken => Counts { requests: 1, slow_ttft: 1, ..Counts::default() },
            SlowMark::Total => Counts { requests: 1, slow_total: 1, ..Counts::default() },
        };
        self.record_counts(now, c)
    }

    /// Records what an attempt already counted as slow in flight adds when it ends: a failure,
    /// or a slow total.
    pub fn record_rest(&mut self, now: Instant, o: &Observation) -> Option<Transition> {
        let c = self.counts(o);
        self.record_counts(now, Counts { requests: 0, slow_ttft: 0, slow_total: 0, throttled: 0, ..c })
    }

    /// Records a finished attempt; returns the transition it caused, if any.
    pub fn record(&mut self, now: Instant, o: &Observation) -> Option<Transition> {
        let c = self.counts(o);
        self.record_counts(now, c)
    }

    fn record_counts(&mut self, now: Instant, c: Counts) -> Option<Transition> {
        // Only a verdict on a new attempt moves the streak: an attempt already counted slow in
        // flight (`requests: 0` at its end) was judged once.
        if c.requests > 0 {
            let bad = c.errors + c.slow_ttft + c.slow_total + c.slow_tpot > 0;
            self.streak = if bad { self.streak.saturating_add(1) } else { 0 };
        }
        match self.state {
            State::Closed => {
                self.window.record(now, c);
                if self.policy.consecutive_failures.is_some_and(|n| self.streak >= n) {
                    return Some(self.open(now, Reason::ConsecutiveFailures));
                }
                let totals = self.window.totals(now);
                let reason = self.verdict(&totals, u64::from(self.policy.min_requests))?;
                Some(self.open(now, reason))
            }
            State::PartialOpen { .. } => {
                self.step += c;
                None
            }
            // Stragglers sent before the breaker opened say nothing new.
            State::Open { .. } => None,
        }
    }

    /// Moves time-driven states on: OPEN → PARTIAL-OPEN when its time is up, and the ramp's
    /// steps. Returns the transitions that happened.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        loop {
            match self.state.clone() {
                State::Closed => return out,
                State::Open { until } => {
                    if now < until {
                        return out;
                    }
                    self.state =
                        State::PartialOpen { share: self.policy.ramp.start, step_started: until, ramp_started: until };
                    self.step = Counts::default();
                    self.credit = 0.0;
                    out.push(Transition { from: Phase::Open, to: Phase::PartialOpen, reason: None });
                }
                State::PartialOpen { share, step_started, ramp_started } => {
                    let step = Duration::from_secs(u64::from(self.policy.ramp.step_s));
                    let step_end = step_started + step;
                    if now < step_end {
                        return out;
                    }
                    if self.verdict(&self.step, 1).is_some() {
                        out.push(self.open(step_end, Reason::UnhealthyStep));
                        continue;
                    }
                    let next = share * self.policy.ramp.factor;
                    if next >= 1.0 {
                        self.state = State::Closed;
                        self.trips = 0;
                        self.reason = None;
                        self.window.clear();
                        self.streak = 0;
                        out.push(Transition { from: Phase::PartialOpen, to: Phase::Closed, reason: None });
                        return out;
                    }
                    if step_end.saturating_duration_since(ramp_started)
                        >= Duration::from_secs(u64::from(self.policy.ramp.max_s))
                    {
                        out.push(self.open(step_end, Reason::StuckRamp));
                        continue;
                    }
                    self.state = State::PartialOpen { share: next, step_started: step_end, ramp_started };
                    self.step = Counts::default();
                }
            }
        }
    }

    /// Whether the next request the endpoint would get may go to it. Call [`Breaker::tick`]
    /// first.
    pub fn admit(&mut self) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::PartialOpen { share, .. } => {
                self.credit = (self.credit + share).min(1.0 + share);
                self.credit >= 1.0
            }
        }
    }

    /// An admitted attempt was sent: its credit is used.
    pub fn spend(&mut self) {
        if matches!(self.state, State::PartialOpen { .. }) && self.credit >= 1.0 {
            self.credit -= 1.0;
        }
    }

    /// The share of traffic admitted now (1 when closed, 0 when open).
    pub fn share(&self) -> f64 {
        match self.state {
            State::Closed => 1.0,
            State::Open { .. } => 0.0,
            State::PartialOpen { share, .. } => share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_api::config::{Ramp, SlowRule};

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window_s: 30,
            min_requests: 10,
            error_rate: 0.2,
            slow_ttft: Some(SlowRule { over_ms: 2000, rate: 0.1 }),
            slow_total: Some(SlowRule { over_ms: 20_000, rate: 0.1 }),
            slow_tpot: None,
            consecutive_failures: None,
            open_for_s: 30,
            ramp: Ramp { start: 0.05, factor: 2.0, step_s: 10, max_s: 300 },
        }
    }

    fn ok(ttft_ms: u64) -> Observation {
        Observation {
            failed: false,
            throttled: false,
            ttft: Some(Duration::from_millis(ttft_ms)),
            total: Duration::from_millis(ttft_ms + 100),
            max_gap: None,
            output_tokens: None,
        }
    }
    const FAIL: Observation = Observation {
        failed: true,
        throttled: false,
        ttft: None,
        total: Duration::from_millis(5),
        max_gap: None,
        output_tokens: None,
    };
    const THROTTLED: Observation = Observation { failed: false, throttled: true, ..FAIL };

    fn feed(b: &mut Breaker, o: Observation, n: usize) -> Vec<Transition> {
        (0..n).filter_map(|_| b.record(Instant::now(), &o)).collect()
    }

    async fn sleep_s(s: u64) {
        tokio::time::advance(Duration::from_secs(s)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_trips_only_above_the_minimum_volume() {
        let mut b = Breaker::new(policy(), Instant::now());
        assert!(feed(&mut b, FAIL, 9).is_empty(), "9 requests: below min_requests, no verdict");
        let t = feed(&mut b, FAIL, 1);
        assert_eq!(t, [Transition { from: Phase::Closed, to: Phase::Open, reason: Some(Reason::ErrorRate) }]);
        assert!(!b.admit());
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_traffic_with_some_errors_stays_closed() {
        let mut b = Breaker::new(policy(), Instant::now());
        for _ in 0..10 {
            feed(&mut b, ok(100), 9);
            feed(&mut b, FAIL, 1);
            sleep_s(1).await;
        }
        assert_eq!(b.state(), &State::Closed, "10 % errors is under the 20 % threshold");
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_counted_but_never_trips() {
        let mut b = Breaker::new(policy(), Instant::now());
        assert!(feed(&mut b, THROTTLED, 500).is_empty());
        assert_eq!(b.state(), &State::Closed);
        assert_eq!(b.window(Instant::now()).throttled, 500);
        assert_eq!(b.window(Instant::now()).requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_token_p90_trips_even_when_every_reply_is_200() {
        let mut b = Breaker::new(policy(), Instant::now());
        feed(&mut b, ok(300), 17);
        let t = feed(&mut b, ok(2500), 2);
        assert_eq!(t.len(), 1, "2 of 19 (10.5 %) later than 2 s");
        assert_eq!(b.reason(), Some(Reason::SlowFirstToken));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stalled_past_the_slow_mark_count_before_they_finish() {
        let mut b = Breaker::new(policy(), Instant::now());
        feed(&mut b, ok(100), 9);
        let t = b.record_slow_in_flight(Instant::now(), SlowMark::FirstToken);
        assert_eq!(t.map(|t| t.reason), Some(Some(Reason::SlowFirstToken)), "1 of 10 stalled ≥ 10 %");
        // Its end adds only what it did not already count: one request, not two.
        let mut b = Breaker::new(policy(), Instant::now());
        b.record_slow_in_flight(Instant::now(), SlowMark::FirstToken);
        b.record_rest(Instant::now(), &FAIL);
        let w = b.window(Instant::now());
        assert_eq!((w.requests, w.slow_ttft, w.errors), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_totals_trip_too() {
        let mut b = Breaker::new(policy(), Instant::now());
        feed(&mut b, ok(100), 9);
        feed(&mut b, Observation { total: Duration::from_secs(30), ..ok(100) }, 1);
        assert_eq!(b.reason(), Some(Reason::SlowTotal));
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_a_dead_endpoint_below_the_minimum_volume() {
        let mut p = policy();
        p.consecutive_failures = Some(5);
        p.min_requests = 1000;
        let mut b = Breaker::new(p, Instant::now());
        feed(&mut b, ok(100), 3);
        assert!(feed(&mut b, FAIL, 4).is_empty(), "4 in a row, far below the rate rule's volume");
        feed(&mut b, ok(100), 1);
        assert!(feed(&mut b, FAIL, 4).is_empty(), "a good attempt ends the streak");
        let t = feed(&mut b, FAIL, 1);
        assert_eq!(t, [Transition { from: Phase::Closed, to: Phase::Open, reason: Some(Reason::ConsecutiveFailures) }]);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stalled_in_flight_extend_the_streak_once_each() {
        let mut p = policy();
        p.consecutive_failures = Some(3);
        p.min_requests = 1000;
        let mut b = Breaker::new(p, Instant::now());
        b.record_slow_in_flight(Instant::now(), SlowMark::FirstToken);
        b.record_rest(Instant::now(), &ok(3000));
        b.record_slow_in_flight(Instant::now(), SlowMark::Total);
        assert_eq!(b.state(), &State::Closed, "two stalled attempts; their ends add nothing");
        let t = b.record_slow_in_flight(Instant::now(), SlowMark::FirstToken);
        assert_eq!(t.and_then(|t| t.reason), Some(Reason::ConsecutiveFailures));
    }

    #[tokio::test(start_paused = true)]
    async fn a_whole_reply_is_judged_by_its_total_not_as_a_first_token() {
        let mut b = Breaker::new(policy(), Instant::now());
        // 20 non-streaming replies of 5 s: slower than the 2 s first-token mark, far under the
        // 20 s total mark. A reply has no first token of its own.
        let whole = Observation { ttft: None, total: Duration::from_secs(5), ..ok(0) };
        assert!(feed(&mut b, whole, 20).is_empty());
        assert_eq!(b.window(Instant::now()).slow_ttft, 0);
        assert_eq!(b.slow_after(false).map(|(_, m)| m), Some(SlowMark::Total));
        assert_eq!(b.slow_after(true).map(|(_, m)| m), Some(SlowMark::FirstToken));
    }

    #[tokio::test(start_paused = true)]
    async fn time_per_output_token_trips_on_a_slow_stream_not_a_long_one() {
        let mut p = policy();
        p.slow_total = None;
        p.slow_tpot = Some(SlowRule { over_ms: 100, rate: 0.5 });
        let mut b = Breaker::new(p, Instant::now());
        // 2,001 tokens in 60 s after a 200 ms first token: 30 ms a token. Long, not slow.
        let long = Observation { total: Duration::from_millis(60_200), output_tokens: Some(2001), ..ok(200) };
        assert_eq!(long.tpot(), Some(Duration::from_millis(30)));
        assert!(feed(&mut b, long, 20).is_empty());
        // 11 tokens in 3.2 s: 300 ms a token.
        let crawl = Observation { total: Duration::from_millis(3_200), output_tokens: Some(11), ..ok(200) };
        let t = feed(&mut b, crawl, 20);
        assert_eq!(t.last().and_then(|t| t.reason), Some(Reason::SlowTpot));
        let whole = Observation { ttft: None, total: Duration::from_secs(2), output_tokens: Some(10), ..ok(0) };
        assert_eq!(whole.tpot(), Some(Duration::from_millis(200)), "a whole reply: total / tokens");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_slide_out_of_the_window() {
        let mut b = Breaker::new(policy(), Instant::now());
        feed(&mut b, FAIL, 5);
        sleep_s(31).await;
        feed(&mut b, ok(100), 5);
        feed(&mut b, FAIL, 1);
        assert_eq!(b.state(), &State::Closed, "1 failure in the last 30 s out of 6");
    }

    /// Trips the breaker and lets the OPEN period pass.
    async fn tripped_then_partial(b: &mut Breaker) {
        feed(b, FAIL, 10);
        sleep_s(30).await;
        let t = b.tick(Instant::now());
        assert_eq!(t, [Transition { from: Phase::Open, to: Phase::PartialOpen, reason: None }]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ramp_admits_its_share_and_doubles_each_healthy_step_until_closed() {
        let mut b = Breaker::new(policy(), Instant::now());
        tripped_then_partial(&mut b).await;
        let mut shares = Vec::new();
        for _ in 0..10 {
            let admitted = (0..1000)
                .filter(|_| {
                    let sent = b.admit();
                    if sent {
                        b.spend();
                    }
                    sent
                })
                .count();
            shares.push(admitted);
            feed(&mut b, ok(100), admitted);
            sleep_s(10).await;
            b.tick(Instant::now());
            if b.state() == &State::Closed {
                break;
            }
        }
        // 5 % → 10 % → 20 % → 40 % → 80 % → closed: five healthy steps, no cliff.
        assert_eq!(shares, [50, 100, 200, 400, 800]);
        assert_eq!(b.state(), &State::Closed);
        assert!((0..100).all(|_| b.admit()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_planned_but_not_sent_is_not_lost() {
        let mut b = Breaker::new(policy(), Instant::now());
        tripped_then_partial(&mut b).await;
        // 5 %: the 20th request planned is admitted.
        let first = (1..=100).find(|_| b.admit()).unwrap();
        assert_eq!(first, 20);
        // An earlier tier answered, so nothing was sent here: the next plan still admits it,
        // and credit does not pile up into a burst.
        assert!(b.admit() && b.admit());
        b.spend();
        assert!(!b.admit(), "one probe sent, the next waits for its credit again");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_step_reopens_for_twice_as_long_up_to_the_cap() {
        let mut b = Breaker::new(policy(), Instant::now());
        let mut open_for = Vec::new();
        feed(&mut b, FAIL, 10);
        for _ in 0..6 {
            let State::Open { until } = *b.state() else { panic!("{:?}", b.state()) };
            let d = until - Instant::now();
            open_for.push(d.as_secs());
            tokio::time::advance(d).await;
            b.tick(Instant::now());
            feed(&mut b, FAIL, 1);
            sleep_s(10).await;
            let t = b.tick(Instant::now());
            assert_eq!(t.last().and_then(|t| t.reason), Some(Reason::UnhealthyStep));
        }
        assert_eq!(open_for, [30, 60, 120, 240, 240, 240], "doubling, capped at {MAX_OPEN_FACTOR}×");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_resets_the_backoff() {
        let mut b = Breaker::new(policy(), Instant::now());
        tripped_then_partial(&mut b).await;
        for _ in 0..5 {
            sleep_s(10).await;
            b.tick(Instant::now());
        }
        assert_eq!(b.state(), &State::Closed);
        feed(&mut b, FAIL, 10);
        let State::Open { until } = *b.state() else { panic!() };
        assert_eq!((until - Instant::now()).as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ramp_that_cannot_close_in_max_s_reopens() {
        let mut p = policy();
        p.ramp = Ramp { start: 0.01, factor: 1.5, step_s: 10, max_s: 60 };
        let mut b = Breaker::new(p, Instant::now());
        tripped_then_partial(&mut b).await;
        let mut last = Vec::new();
        for _ in 0..6 {
            sleep_s(10).await;
            last = b.tick(Instant::now());
        }
        assert_eq!(last, [Transition { from: Phase::PartialOpen, to: Phase::Open, reason: Some(Reason::StuckRamp) }]);
    }
}
