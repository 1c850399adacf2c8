//! Feedback trends per (feature, endpoint): the slow signal that demotes an endpoint whose answers
//! users like less and less (docs/design.md §7). Never used for per-request routing.
//!
//! Scores (0 bad … 1 good) are summed in windows of `window`. A window with at least
//! `min_samples` scores is compared with the baseline — the running mean of the earlier healthy
//! windows. It is *low* when its mean is at least `min_drop` below the baseline and the drop is
//! significant (`z` standard errors, with the variance of scores in [0, 1] bounded by m(1 − m)).
//! `sustained` low windows in a row demote the endpoint; a healthy window resets the streak and
//! joins the baseline. Windows with too few scores say nothing either way.

use std::collections::HashMap;
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackPolicy {
    pub window: Duration,
    pub min_samples: u64,
    pub min_drop: f64,
    pub z: f64,
    pub sustained: u32,
    /// The baseline weighs at most this many scores, so it follows slow drifts.
    pub baseline_cap: f64,
}

impl Default for FeedbackPolicy {
    fn default() -> Self {
        FeedbackPolicy {
            window: Duration::from_secs(600),
            min_samples: 50,
            min_drop: 0.1,
            z: 3.0,
            sustained: 3,
            baseline_cap: 5_000.0,
        }
    }
}

struct Trend {
    started: Instant,
    count: u64,
    sum: f64,
    /// (sum, count) of the healthy windows so far, count capped.
    baseline: Option<(f64, f64)>,
    low_streak: u32,
    /// Last closed windows (mean, count), newest last, for the admin view.
    recent: Vec<(f64, u64)>,
    demoted: bool,
}

impl Trend {
    /// A trend with no scores yet, its first window starting `now`.
    fn new(now: Instant) -> Self {
        Trend { started: now, count: 0, sum: 0.0, baseline: None, low_streak: 0, recent: Vec::new(), demoted: false }
    }
}

/// What a new leader must not forget of a trend: its baseline and its streak of low windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrendCheckpoint {
    pub feature: String,
    pub endpoint: String,
    pub baseline: Option<(f64, f64)>,
    pub low_streak: u32,
    pub demoted: bool,
}

/// A sustained, significant drop: demote `endpoint` in `feature`.
#[derive(Debug, Clone, PartialEq)]
pub struct Drop {
    pub feature: String,
    pub endpoint: String,
    pub reason: String,
}

pub struct Trends {
    policy: FeedbackPolicy,
    trends: HashMap<(String, String), Trend>,
}

impl Trends {
    pub fn new(policy: FeedbackPolicy) -> Self {
        Trends { policy, trends: HashMap::new() }
    }

    pub fn record(&mut self, feature: &str, endpoint: &str, count: u64, score_sum: f64, now: Instant) {
        let t = self.trends.entry((feature.to_owned(), endpoint.to_owned())).or_insert_with(|| Trend::new(now));
        t.count += count;
        t.sum += score_sum.clamp(0.0, count as f64);
    }

    /// Keeps only the trends `keep` accepts (the config's routed pairs); returns how many went.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) -> usize {
        let before = self.trends.len();
        self.trends.retain(|(f, e), _| keep(f, e));
        before - self.trends.len()
    }

    pub fn len(&self) -> usize {
        self.trends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trends.is_empty()
    }

    /// Closes the windows that are over; returns the drops that call for a demotion.
    pub fn evaluate(&mut self, now: Instant) -> Vec<Drop> {
        let p = &self.policy;
        let mut out = Vec::new();
        for ((feature, endpoint), t) in &mut self.trends {
            if now.saturating_duration_since(t.started) < p.window {
                continue;
            }
            let (count, sum) = (t.count, t.sum);
            t.started = now;
            t.count = 0;
            t.sum = 0.0;
            if count < p.min_samples {
                continue;
            }
            let mean = sum / count as f64;
            t.recent.push((mean, count));
            if t.recent.len() > 12 {
                t.recent.remove(0);
            }
            let Some((bsum, bcount)) = t.baseline else {
                t.baseline = Some((sum, (count as f64).min(p.baseline_cap)));
                continue;
            };
            let base = bsum / bcount;
            let var = |m: f64| (m * (1.0 - m)).max(0.01);
            let se = (var(base) / bcount + var(mean) / count as f64).sqrt();
            let drop = base - mean;
            if drop >= p.min_drop && drop / se >= p.z {
                t.low_streak += 1;
                if t.low_streak >= p.sustained && !t.demoted {
                    t.demoted = true;
                    out.push(Drop {
                        feature: feature.clone(),
                        endpoint: endpoint.clone(),
                        reason: format!(
                            "user feedback fell from {base:.2} to {mean:.2} (last window, {count} scores) for {} \
                             windows of {} s in a row",
                            t.low_streak,
                            p.window.as_secs()
                        ),
                    });
                }
            } else {
                t.low_streak = 0;
                // A healthy window joins the baseline, which weighs at most `baseline_cap` scores.
                let (s, c) = (bsum + sum, bcount + count as f64);
                let k = if c > p.baseline_cap { p.baseline_cap / c } else { 1.0 };
                t.baseline = Some((s * k, c * k));
            }
        }
        out
    }

    pub fn checkpoint(&self) -> Vec<TrendCheckpoint> {
        let mut out: Vec<TrendCheckpoint> = self
            .trends
            .iter()
            .filter(|(_, t)| t.baseline.is_some() || t.demoted)
            .map(|((f, e), t)| TrendCheckpoint {
                feature: f.clone(),
                endpoint: e.clone(),
                baseline: t.baseline,
                low_streak: t.low_streak,
                demoted: t.demoted,
            })
            .collect();
        out.sort_by(|a, b| (&a.feature, &a.endpoint).cmp(&(&b.feature, &b.endpoint)));
        out
    }

    /// Takes over a predecessor's baselines and streaks; windows start afresh now.
    pub fn restore(&mut self, trends: &[TrendCheckpoint], now: Instant) {
        for c in trends {
            let t = self.trends.entry((c.feature.clone(), c.endpoint.clone())).or_insert_with(|| Trend::new(now));
            t.baseline = t.baseline.or(c.baseline);
            t.low_streak = t.low_streak.max(c.low_streak);
            t.demoted |= c.demoted;
        }
    }

    /// A demotion was undone: the endpoint starts a fresh trend, so the windows that demoted it
    /// do not demote it again at once.
    pub fn reset(&mut self, feature: &str, endpoint: &str) {
        self.trends.remove(&(feature.to_owned(), endpoint.to_owned()));
    }

    pub fn view(&self) -> serde_json::Value {
        let mut rows: Vec<serde_json::Value> = self
            .trends
            .iter()
            .map(|((f, e), t)| {
                serde_json::json!({"feature": f, "endpoint": e,
                    "baseline": t.baseline.map(|(s, c)| s / c), "low_streak": t.low_streak, "demoted": t.demoted,
                    "current_window": {"count": t.count, "mean": if t.count == 0 { None } else { Some(t.sum / t.count as f64) }},
                    "recent_windows": t.recent.iter().map(|(m, c)| serde_json::json!({"mean": m, "count": c})).collect::<Vec<_>>()})
            })
            .collect();
        rows.sort_by(|a, b| {
            (a["feature"].as_str(), a["endpoint"].as_str()).cmp(&(b["feature"].as_str(), b["endpoint"].as_str()))
        });
        serde_json::json!({"window_s": self.policy.window.as_secs(), "trends": rows})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FeedbackPolicy {
        FeedbackPolicy { window: Duration::from_secs(60), min_samples: 40, ..FeedbackPolicy::default() }
    }

    /// One window of `n` scores averaging `mean`, then the window's end.
    async fn window(t: &mut Trends, n: u64, mean: f64) -> Vec<Drop> {
        t.record("search", "a", n, mean * n as f64, Instant::now());
        tokio::time::advance(Duration::from_secs(60)).await;
        t.evaluate(Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_sustained_significant_drop_demotes_once() {
        let mut t = Trends::new(policy());
        for _ in 0..3 {
            assert!(window(&mut t, 100, 0.8).await.is_empty());
        }
        assert!(window(&mut t, 100, 0.5).await.is_empty(), "one bad window is not a trend");
        assert!(window(&mut t, 100, 0.5).await.is_empty());
        let d = window(&mut t, 100, 0.5).await;
        assert_eq!(d.len(), 1, "three in a row");
        assert_eq!((d[0].feature.as_str(), d[0].endpoint.as_str()), ("search", "a"));
        assert!(d[0].reason.contains("0.80 to 0.50"), "{}", d[0].reason);
        assert!(window(&mut t, 100, 0.5).await.is_empty(), "demoted once, not on every window");
        t.reset("search", "a");
        assert!(window(&mut t, 100, 0.5).await.is_empty(), "after an undo the trend starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_resumes_the_baseline_and_the_streak() {
        let mut old = Trends::new(policy());
        for _ in 0..3 {
            window(&mut old, 100, 0.8).await;
        }
        window(&mut old, 100, 0.5).await;
        window(&mut old, 100, 0.5).await;
        let c = old.checkpoint();
        assert_eq!((c.len(), c[0].low_streak), (1, 2));
        // The new leader has heard none of it, and still demotes on the third low window.
        let mut new = Trends::new(policy());
        new.restore(&c, Instant::now());
        let d = window(&mut new, 100, 0.5).await;
        assert_eq!(d.len(), 1, "the streak carried over: {d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn noise_small_samples_and_interrupted_streaks_do_not_demote() {
        let mut t = Trends::new(policy());
        assert!(window(&mut t, 100, 0.8).await.is_empty());
        for _ in 0..10 {
            assert!(window(&mut t, 100, 0.75).await.is_empty(), "0.05 below is within min_drop");
            assert!(window(&mut t, 10, 0.0).await.is_empty(), "10 scores are too few to judge");
        }
        for _ in 0..5 {
            assert!(window(&mut t, 100, 0.5).await.is_empty());
            assert!(window(&mut t, 100, 0.5).await.is_empty());
            assert!(window(&mut t, 100, 0.8).await.is_empty(), "a good window breaks the streak");
        }
        // Few but real scores: a 0.15 drop over 40 scores is under three standard errors.
        let mut t = Trends::new(policy());
        window(&mut t, 40, 0.6).await;
        for _ in 0..5 {
            assert!(window(&mut t, 40, 0.45).await.is_empty());
        }
    }
}
