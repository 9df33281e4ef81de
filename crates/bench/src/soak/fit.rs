//! Whether a sampled series grows without bound: a least-squares slope over the samples
//! after the warm-up, confirmed by comparing the window's first and last quarters.
//!
//! One sample can be high for many reasons (a burst of retries, an allocator arena, the
//! WAL before a checkpoint), and a slope alone is pulled by one step, so a series fails
//! only if both hold:
//! - its fitted slope over the window exceeds the series' limit per hour, and
//! - the mean of the window's last quarter exceeds the mean of its first quarter by more
//!   than the series' margin (the larger of an absolute and a relative one).
//!
//! A series that rose during the warm-up and then stays flat passes; one that keeps rising
//! at the limit's rate fails. A window of fewer than [`MIN_WINDOW_SAMPLES`] samples cannot
//! be judged, and counts as a failure (run longer or sample more often).

use serde::Serialize;

/// The fewest samples after the warm-up that a series can be judged on.
pub const MIN_WINDOW_SAMPLES: usize = 8;

/// When a series counts as growing.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limit {
    /// Fitted slope above which the series may be growing, in its unit per hour.
    pub slope_per_hour: f64,
    /// The last quarter's mean must exceed the first quarter's by more than this...
    pub margin_abs: f64,
    /// ...and by more than this fraction of the first quarter's mean.
    pub margin_rel: f64,
}

/// What the fit says about one series.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub series: String,
    pub unit: &'static str,
    /// First and last sample of the whole run.
    pub start: f64,
    pub end: f64,
    pub max: f64,
    /// Samples in the window (after the warm-up).
    pub window_samples: usize,
    pub slope_per_hour: f64,
    pub first_quarter_mean: f64,
    pub last_quarter_mean: f64,
    pub limit: Limit,
    pub grows: bool,
    /// Why it failed, or "" when it passed.
    pub reason: String,
}

impl Verdict {
    /// One line: start, end, slope and the outcome.
    pub fn line(&self) -> String {
        format!(
            "{:<22} start {:>8.2} end {:>8.2} max {:>8.2} {u}; slope {:+.3} {u}/h (limit {}), \
             quarters {:.2} -> {:.2}: {}",
            self.series,
            self.start,
            self.end,
            self.max,
            self.slope_per_hour,
            self.limit.slope_per_hour,
            self.first_quarter_mean,
            self.last_quarter_mean,
            if self.grows { &self.reason } else { "flat" },
            u = self.unit,
        )
    }
}

/// Least-squares slope of `y` over `x` (`None` for fewer than two distinct `x`).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Judges `samples` (seconds since the start, value): the window is every sample at or
/// after `warmup_seconds`.
pub fn judge(
    series: &str,
    unit: &'static str,
    samples: &[(f64, f64)],
    warmup_seconds: f64,
    limit: Limit,
) -> Verdict {
    let window: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warmup_seconds)
        .collect();
    let hours: Vec<(f64, f64)> = window.iter().map(|(t, v)| (t / 3600.0, *v)).collect();
    let slope_per_hour = slope(&hours).unwrap_or(0.0);
    let quarter = window.len().div_ceil(4).max(1);
    let values: Vec<f64> = window.iter().map(|p| p.1).collect();
    let first_quarter_mean = mean(&values[..quarter.min(values.len())]);
    let last_quarter_mean = mean(&values[values.len().saturating_sub(quarter)..]);
    let margin = limit.margin_abs.max(limit.margin_rel * first_quarter_mean);
    let rise = last_quarter_mean - first_quarter_mean;
    let (grows, reason) = if window.len() < MIN_WINDOW_SAMPLES {
        (
            true,
            format!(
                "only {} samples after the warm-up, {MIN_WINDOW_SAMPLES} needed",
                window.len()
            ),
        )
    } else if slope_per_hour > limit.slope_per_hour && rise > margin {
        (
            true,
            format!(
                "GROWS: slope above the limit and the last quarter {rise:.2} above the first (margin {margin:.2})"
            ),
        )
    } else {
        (false, String::new())
    };
    let all: Vec<f64> = samples.iter().map(|p| p.1).collect();
    Verdict {
        series: series.to_string(),
        unit,
        start: all.first().copied().unwrap_or(0.0),
        end: all.last().copied().unwrap_or(0.0),
        max: all.iter().copied().fold(f64::MIN, f64::max),
        window_samples: window.len(),
        slope_per_hour,
        first_quarter_mean,
        last_quarter_mean,
        limit,
        grows,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        slope_per_hour: 1.0,
        margin_abs: 0.5,
        margin_rel: 0.02,
    };

    /// One sample a minute for an hour, `f(minute)`.
    fn hour(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..=60).map(|m| (m as f64 * 60.0, f(m as f64))).collect()
    }

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 + 2.0 * x as f64)).collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn a_steady_leak_fails() {
        // 40 MiB growing by 5 MiB an hour.
        let verdict = judge("rss", "MiB", &hour(|m| 40.0 + m / 12.0), 720.0, LIMIT);
        assert!(verdict.grows, "{}", verdict.line());
        assert!((verdict.slope_per_hour - 5.0).abs() < 1e-6);
    }

    #[test]
    fn growth_during_the_warm_up_then_flat_passes() {
        let verdict = judge(
            "rss",
            "MiB",
            &hour(|m| 20.0 + m.min(10.0) * 2.0),
            720.0,
            LIMIT,
        );
        assert!(!verdict.grows, "{}", verdict.line());
        assert_eq!(verdict.start, 20.0);
        assert_eq!(verdict.end, 40.0);
    }

    #[test]
    fn noise_and_one_late_step_pass() {
        // Alternating +-0.3 around 40, and one 0.4 step in the last minutes: the slope may
        // exceed the limit, the quarters do not differ by the margin.
        let noisy = hour(|m| {
            40.0 + if (m as u32).is_multiple_of(2) {
                0.3
            } else {
                -0.3
            } + if m > 55.0 { 0.4 } else { 0.0 }
        });
        let verdict = judge("rss", "MiB", &noisy, 720.0, LIMIT);
        assert!(!verdict.grows, "{}", verdict.line());
    }

    #[test]
    fn too_few_samples_cannot_pass() {
        let short: Vec<(f64, f64)> = (0..5).map(|s| (s as f64, 1.0)).collect();
        let verdict = judge("fds", "", &short, 0.0, LIMIT);
        assert!(verdict.grows);
        assert!(verdict.reason.contains("samples"), "{}", verdict.reason);
    }
}
