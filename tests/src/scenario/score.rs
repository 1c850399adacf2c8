//! The score card of one scenario run: what clients saw, the figures the acceptance list names,
//! and a per-second timeline.

use super::load::{Observed, Seen};
use super::{Goal, Scenario};
use std::fmt::Write;

/// One acceptance check: what it asks, what was measured, whether it holds.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: String,
    pub measured: String,
    pub pass: bool,
}

/// One second of the timeline.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub second: u64,
    pub started: usize,
    pub failed: usize,
    /// Answered by the primary, of the requests started in this second.
    pub on_primary: usize,
    pub primary_hits: usize,
    pub backup_hits: usize,
    pub p99_first_ms: Option<f64>,
    pub breaker: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub name: &'static str,
    pub what: &'static str,
    pub requests: usize,
    /// Requests that did not get a whole, successful reply.
    pub failed: usize,
    /// Of those, answered with a non-200 status.
    pub rejected: usize,
    pub success_pct: f64,
    /// Streams only: time to the first token.
    pub p99_first_token_ms: f64,
    /// From the fault's start until the primary gets ≤ 5 % of new requests for the rest of it.
    pub to_backup_s: Option<f64>,
    /// From the fault's end until the primary answers ≥ 95 % of every later second's requests.
    pub back_s: Option<f64>,
    /// Upstream requests (both fakes) per client request.
    pub amplification: f64,
    /// From the primary's first request in the fault until the breaker stopped its traffic (the
    /// last request before a gap of a second or more); none if the breaker never opened.
    pub open_after_s: Option<f64>,
    /// Times the primary's breaker opened (`spillway_breaker_transitions_total{to="open"}`).
    pub opens: u64,
    /// Distinct PARTIAL-OPEN shares seen after the fault.
    pub ramp_steps: usize,
    /// Surge: share of the surge's requests answered by the PT primary.
    pub pt_share_surge: f64,
    /// Surge: share of calm-phase requests answered on-demand (the first 3 s after the surge,
    /// scored by `back_s`, left out).
    pub od_share_calm: f64,
    pub timeline: Vec<Second>,
    pub checks: Vec<Check>,
}

fn p99(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * 0.99).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn on_primary(r: &Seen) -> bool {
    r.endpoint == "primary"
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

impl Report {
    pub fn new(s: &Scenario, seen: Observed, primary_hits: Vec<f64>, backup_hits: Vec<f64>, metrics: &str) -> Report {
        let req = &seen.requests;
        let (from, to) = s.fault;
        let failed = req.iter().filter(|r| !r.ok).count();
        let rejected = req.iter().filter(|r| r.status != 200).count();
        let firsts: Vec<f64> = req.iter().filter(|r| r.stream && r.ok).filter_map(|r| r.first_s).collect();
        let started_in = |a: f64, b: f64| req.iter().filter(|r| r.started_s >= a && r.started_s < b).count();
        let hits_in = |a: f64, b: f64| primary_hits.iter().filter(|&&h| h >= a && h < b).count();

        let to_backup_s = (0..)
            .map(|k| from + f64::from(k) * 0.1)
            .take_while(|t| *t < to)
            .find(|t| share(hits_in(*t, to), started_in(*t, to)) <= 0.05)
            .map(|t| t - from);
        let seconds = s.duration_s.ceil() as u64;
        let second_share = |sec: u64| {
            let in_sec: Vec<&Seen> = req.iter().filter(|r| r.started_s.floor() as u64 == sec).collect();
            if in_sec.is_empty() { 1.0 } else { share(in_sec.iter().filter(|r| on_primary(r)).count(), in_sec.len()) }
        };
        let back_s = (to.ceil() as u64..seconds)
            .find(|&start| (start..seconds).all(|sec| second_share(sec) >= 0.95))
            .map(|start| (start as f64 - to).max(0.0));

        let opens = metrics
            .lines()
            .filter(|l| {
                l.starts_with("spillway_breaker_transitions_total{")
                    && l.contains(r#"endpoint="primary""#)
                    && l.contains(r#"to="open""#)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
        let mut after: Vec<f64> = primary_hits.iter().copied().filter(|&h| h >= from && h < to).collect();
        after.sort_by(f64::total_cmp);
        let open_after_s = after
            .windows(2)
            .find(|w| w[1] - w[0] >= 1.0)
            .map(|w| w[0])
            .or(after.last().copied().filter(|_| after.len() > 1))
            .zip(after.first())
            .map(|(last, first)| last - first)
            .filter(|_| opens > 0);

        let mut shares: Vec<f64> = seen
            .samples
            .iter()
            .filter(|x| x.at_s >= to && x.state == "partial_open")
            .filter_map(|x| x.ramp_share)
            .collect();
        shares.sort_by(f64::total_cmp);
        shares.dedup_by(|a, b| (*a - *b).abs() < 1e-9);

        let surge: Vec<&Seen> = req.iter().filter(|r| r.started_s >= from && r.started_s < to).collect();
        let calm: Vec<&Seen> = req.iter().filter(|r| r.started_s < from || r.started_s >= to + 3.0).collect();
        let pt_share_surge = share(surge.iter().filter(|r| on_primary(r)).count(), surge.len());
        let od_share_calm = share(calm.iter().filter(|r| r.endpoint == "backup").count(), calm.len());

        let timeline = (0..seconds)
            .map(|sec| {
                let (a, b) = (sec as f64, sec as f64 + 1.0);
                let in_sec: Vec<&Seen> = req.iter().filter(|r| r.started_s >= a && r.started_s < b).collect();
                Second {
                    second: sec,
                    started: in_sec.len(),
                    failed: in_sec.iter().filter(|r| !r.ok).count(),
                    on_primary: in_sec.iter().filter(|r| on_primary(r)).count(),
                    primary_hits: hits_in(a, b),
                    backup_hits: backup_hits.iter().filter(|&&h| h >= a && h < b).count(),
                    p99_first_ms: p99(in_sec.iter().filter(|r| r.stream).filter_map(|r| r.first_s).collect())
                        .map(|x| x * 1000.0),
                    breaker: seen
                        .samples
                        .iter()
                        .rev()
                        .find(|x| x.at_s < b)
                        .map(|x| match x.ramp_share {
                            Some(share) => format!("{} {:.0}%", x.state, share * 100.0),
                            None => x.state.clone(),
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();

        let mut r = Report {
            name: s.name,
            what: s.what,
            requests: req.len(),
            failed,
            rejected,
            success_pct: 100.0 * share(req.len() - failed, req.len()),
            p99_first_token_ms: p99(firsts).unwrap_or(0.0) * 1000.0,
            to_backup_s,
            back_s,
            amplification: share(primary_hits.len() + backup_hits.len(), req.len()),
            open_after_s,
            opens,
            ramp_steps: shares.len(),
            pt_share_surge,
            od_share_calm,
            timeline,
            checks: Vec::new(),
        };
        r.checks = r.judge(s.goal);
        r
    }

    fn judge(&self, goal: Goal) -> Vec<Check> {
        let check = |what: &str, measured: String, pass: bool| Check { what: what.to_owned(), measured, pass };
        let secs = |v: Option<f64>| v.map_or("never".to_owned(), |s| format!("{s:.1} s"));
        let mut out =
            vec![check("0 requests failed", format!("{} of {}", self.failed, self.requests), self.failed == 0)];
        match goal {
            Goal::Surge => {
                out.push(check(
                    "≥ 40 % of the surge on PT",
                    format!("{:.1} %", self.pt_share_surge * 100.0),
                    self.pt_share_surge >= 0.40,
                ));
                out.push(check(
                    "< 5 % on-demand when calm",
                    format!("{:.1} %", self.od_share_calm * 100.0),
                    self.od_share_calm < 0.05,
                ));
                out.push(check("back to PT within ~3 s", secs(self.back_s), self.back_s.is_some_and(|s| s <= 3.0)));
            }
            Goal::Outage => {
                out.push(check(
                    "breaker open ≤ 1 s after the first failure",
                    secs(self.open_after_s),
                    self.open_after_s.is_some_and(|s| s <= 1.0),
                ));
                out.push(check(
                    "amplification ≤ 1.05",
                    format!("{:.3}", self.amplification),
                    self.amplification <= 1.05,
                ));
            }
            Goal::BrownoutHedged => out.push(check(
                "p99 first token ≤ 500 ms",
                format!("{:.0} ms", self.p99_first_token_ms),
                self.p99_first_token_ms <= 500.0,
            )),
            Goal::Brownout => out.push(check(
                "≥ 95 % off the primary within 2 s",
                secs(self.to_backup_s),
                self.to_backup_s.is_some_and(|s| s <= 2.0),
            )),
            Goal::Flapping { flaps } => out.push(check(
                "at most one re-trip per flap",
                format!("{} opens in {flaps} flaps", self.opens),
                self.opens <= u64::from(flaps),
            )),
            Goal::Recovery => out.push(check(
                "a staged ramp of ≥ 3 steps",
                format!("{} steps", self.ramp_steps),
                self.ramp_steps >= 3,
            )),
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// The score card, then the checks.
    pub fn card(&self) -> String {
        let secs = |v: Option<f64>| v.map_or("—".to_owned(), |s| format!("{s:.1} s"));
        let mut out = String::new();
        let _ = writeln!(out, "## {} — {}", self.name, self.what);
        let _ = writeln!(
            out,
            "requests {} | success {:.2} % | rejected {} | p99 first token {:.0} ms | to backup {} | back to primary {} | amplification {:.3} | breaker open after {} | opens {} | ramp steps {}",
            self.requests,
            self.success_pct,
            self.rejected,
            self.p99_first_token_ms,
            secs(self.to_backup_s),
            secs(self.back_s),
            self.amplification,
            secs(self.open_after_s),
            self.opens,
            self.ramp_steps,
        );
        if self.name == "surge" {
            let _ = writeln!(
                out,
                "surge on PT {:.1} % | calm on-demand {:.1} %",
                self.pt_share_surge * 100.0,
                self.od_share_calm * 100.0
            );
        }
        for c in &self.checks {
            let _ = writeln!(out, "  [{}] {}: {}", if c.pass { "pass" } else { "FAIL" }, c.what, c.measured);
        }
        out
    }

    /// One line a second.
    pub fn timeline_text(&self) -> String {
        let mut out = String::from("   s  sent  fail  on-primary  hits p/b  p99-first-ms  breaker\n");
        for s in &self.timeline {
            let _ = writeln!(
                out,
                "{:>4}  {:>4}  {:>4}  {:>9}%  {:>4}/{:<4}  {:>12}  {}",
                s.second,
                s.started,
                s.failed,
                (100.0 * share(s.on_primary, s.started)).round(),
                s.primary_hits,
                s.backup_hits,
                s.p99_first_ms.map_or("—".to_owned(), |v| format!("{v:.0}")),
                s.breaker
            );
        }
        out
    }
}
