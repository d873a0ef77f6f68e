//! Exponential backoff, the one helper every retry in CROW waits with: a
//! lost commit race (the lake), a transient AI provider error, a webhook
//! delivery, a failed scheduled run.
//!
//! Retry `n` (0 for the first retry) waits `base × 2ⁿ`, at most `cap`, and
//! then applies its [`Jitter`]. Retry loops themselves stay with their
//! callers: what counts as retryable, `Retry-After`, and how many attempts
//! differ for each, and a general retry crate (`backon`, `backoff`) would
//! add a dependency to save the three lines each loop is. The arithmetic
//! saturates: no attempt count overflows it.

use std::time::Duration;

/// How a wait is spread so that retries of many callers do not line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential wait (a schedule operators read, such as a
    /// job's `retry_at`).
    None,
    /// Uniform in `[wait/2, wait]` ("equal jitter"): spread, yet never much
    /// shorter than the backoff asked for.
    Half,
    /// The wait plus uniform `[0, extra]`: a short fixed spread on a short
    /// wait (commit races between writers of one table).
    Add(Duration),
}

/// An exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's wait.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// The spread.
    pub jitter: Jitter,
}

impl Backoff {
    /// `base × 2ⁿ`, capped, with no jitter.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            jitter: Jitter::None,
        }
    }

    /// The same backoff with `jitter`.
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry `n` (0-based), without jitter.
    pub fn exponential(&self, n: u32) -> Duration {
        // 2^31 × any base is past any cap worth having.
        let factor = 1u32 << n.min(31);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `n` (0-based), with jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.exponential(n);
        match self.jitter {
            Jitter::None => exp,
            Jitter::Half => {
                let half = exp / 2;
                let spread = u64::try_from((exp - half).as_nanos()).unwrap_or(u64::MAX);
                half + Duration::from_nanos(rand::random_range(0..=spread))
            }
            Jitter::Add(extra) => {
                let spread = u64::try_from(extra.as_nanos()).unwrap_or(u64::MAX);
                exp.saturating_add(Duration::from_nanos(rand::random_range(0..=spread)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_saturate() {
        let b = Backoff::new(Duration::from_secs(60), Duration::from_secs(86_400));
        let waits: Vec<u64> = (0..6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920]);
        assert_eq!(b.delay(11), Duration::from_secs(86_400));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(86_400));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let half = Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
            .with_jitter(Jitter::Half);
        let add = Backoff::new(Duration::from_millis(20), Duration::from_millis(1280))
            .with_jitter(Jitter::Add(Duration::from_millis(50)));
        let mut spread = std::collections::BTreeSet::new();
        for n in 0..12u32 {
            let exp = Duration::from_millis(500 * (1u64 << n)).min(Duration::from_secs(30));
            let exp_add = Duration::from_millis(20 * (1u64 << n)).min(Duration::from_millis(1280));
            for _ in 0..50 {
                let d = half.delay(n);
                assert!(
                    d >= exp / 2 && d <= exp,
                    "retry {n}: {d:?} outside {exp:?}/2..={exp:?}"
                );
                spread.insert(d);
                let d = add.delay(n);
                assert!(
                    d >= exp_add && d <= exp_add + Duration::from_millis(50),
                    "retry {n}: {d:?} outside {exp_add:?}+[0, 50 ms]"
                );
            }
        }
        // Jittered waits are spread, not one value per retry.
        assert!(spread.len() > 12 * 10, "{}", spread.len());
    }
}
