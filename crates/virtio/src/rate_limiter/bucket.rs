//! One token bucket, Firecracker's shape: `size` tokens that refill continuously at
//! `size` per `refill_time`, plus a `one_time_burst` spent before the bucket. Pure maths on
//! instants the caller passes in, so tests drive it with a fake clock.
//!
//! Tokens are kept scaled by the refill time in nanoseconds (`tokens × refill_ns`), so a
//! refill of `elapsed_ns × size` is exact and nothing is lost to rounding. An operation is
//! admitted when the bucket holds at least `min(tokens, size)`; it then takes all its
//! tokens, which may leave the bucket in debt: a request larger than the bucket (a 1 MiB
//! read through a 64 KiB bucket) goes through once the bucket is full and the next waits
//! until the debt is repaid, so the average rate holds for any request size.

use std::time::{Duration, Instant};

/// A bucket's configuration as a client gives it (Firecracker's `TokenBucket` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketConfig {
    /// Tokens (bytes or operations) the bucket holds when full.
    pub size: u64,
    /// Tokens spent once, before the bucket, right after the limiter is created.
    pub one_time_burst: u64,
    /// Milliseconds to refill the whole bucket from empty.
    pub refill_time_ms: u64,
}

impl BucketConfig {
    /// Whether the bucket limits anything: as in Firecracker, a bucket with `size` or
    /// `refill_time` 0 does not.
    pub fn limits(&self) -> bool {
        self.size != 0 && self.refill_time_ms != 0
    }
}

/// The state of one bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u128,
    /// Tokens × refill_ns; negative while in debt.
    budget: i128,
    one_time_burst: u64,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`, or `None` when `config` limits nothing.
    pub fn new(config: BucketConfig, now: Instant) -> Option<Self> {
        if !config.limits() {
            return None;
        }
        let refill_ns = u128::from(config.refill_time_ms) * 1_000_000; // < 2^84
        Some(TokenBucket {
            size: config.size,
            refill_ns,
            budget: Self::capacity(config.size, refill_ns),
            one_time_burst: config.one_time_burst,
            last_refill: now,
        })
    }

    /// The scaled budget of a full bucket.
    fn capacity(size: u64, refill_ns: u128) -> i128 {
        scaled(size, refill_ns)
    }

    /// Adds the tokens refilled since the last call (never past a full bucket).
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_refill).as_nanos();
        self.last_refill = self.last_refill.max(now);
        let added = elapsed.saturating_mul(u128::from(self.size));
        let full = Self::capacity(self.size, self.refill_ns);
        let added = i128::try_from(added).unwrap_or(i128::MAX);
        self.budget = self.budget.saturating_add(added).min(full);
    }

    /// How long until an operation of `tokens` would be admitted: `None` when it would
    /// be now.
    pub fn wait_for(&mut self, tokens: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let from_bucket = tokens.saturating_sub(self.one_time_burst);
        if from_bucket == 0 {
            return None;
        }
        let needed = scaled(from_bucket.min(self.size), self.refill_ns);
        if self.budget >= needed {
            return None;
        }
        // Scaled tokens missing / tokens per ns, rounded up.
        let missing = needed.saturating_sub(self.budget).unsigned_abs();
        let ns = missing.div_ceil(u128::from(self.size));
        Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Takes `tokens`: from the one-time burst first, the rest from the bucket (which may
    /// go into debt). Call after [`TokenBucket::wait_for`] said the operation may go.
    pub fn consume(&mut self, tokens: u64, now: Instant) {
        self.refill(now);
        let from_burst = tokens.min(self.one_time_burst);
        self.one_time_burst -= from_burst;
        let from_bucket = scaled(tokens - from_burst, self.refill_ns);
        self.budget = self.budget.saturating_sub(from_bucket);
    }

    /// Whole tokens in the bucket now (0 while in debt), for tests and reports.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.budget.max(0) as u128 / self.refill_ns).unwrap_or(u64::MAX)
    }

    /// The one-time burst not spent yet.
    pub fn burst_left(&self) -> u64 {
        self.one_time_burst
    }
}

/// `tokens × refill_ns`, saturating (a u64 size times a u64 of milliseconds can pass
/// 2^127).
fn scaled(tokens: u64, refill_ns: u128) -> i128 {
    let value = u128::from(tokens).saturating_mul(refill_ns);
    i128::try_from(value).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, burst: u64, refill_ms: u64, now: Instant) -> TokenBucket {
        TokenBucket::new(
            BucketConfig {
                size,
                one_time_burst: burst,
                refill_time_ms: refill_ms,
            },
            now,
        )
        .unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn size_or_refill_time_zero_limits_nothing() {
        let now = Instant::now();
        let cfg = |size, refill_time_ms| BucketConfig {
            size,
            one_time_burst: 5,
            refill_time_ms,
        };
        assert!(TokenBucket::new(cfg(0, 100), now).is_none());
        assert!(TokenBucket::new(cfg(100, 0), now).is_none());
        assert!(TokenBucket::new(cfg(1, 1), now).is_some());
    }

    #[test]
    fn starts_full_and_refills_linearly() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 100, t0);
        assert_eq!(b.available(t0), 1000);
        assert_eq!(b.wait_for(1000, t0), None);
        b.consume(1000, t0);
        assert_eq!(b.available(t0), 0);
        // 1000 tokens per 100 ms: 10 per ms.
        assert_eq!(b.available(t0 + ms(10)), 100);
        assert_eq!(b.available(t0 + ms(50)), 500);
        // Never more than full.
        assert_eq!(b.available(t0 + ms(10_000)), 1000);
    }

    #[test]
    fn an_empty_bucket_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 100, t0);
        b.consume(1000, t0);
        assert_eq!(b.wait_for(100, t0), Some(ms(10)));
        assert_eq!(b.wait_for(100, t0 + ms(4)), Some(ms(6)));
        assert_eq!(b.wait_for(100, t0 + ms(10)), None);
    }

    #[test]
    fn requests_larger_than_the_bucket_go_when_full_and_leave_debt() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 0, 100, t0);
        // 3000 tokens through a 1000-token bucket: admitted (the bucket is full) ...
        assert_eq!(b.wait_for(3000, t0), None);
        b.consume(3000, t0);
        // ... and the bucket owes 2000: a full bucket again only after 300 ms.
        assert_eq!(b.wait_for(3000, t0), Some(ms(300)));
        assert_eq!(
            b.wait_for(1, t0 + ms(200)),
            Some(Duration::from_micros(100))
        );
        assert_eq!(b.wait_for(3000, t0 + ms(300)), None);
    }

    #[test]
    fn the_average_rate_holds_for_any_request_size() {
        // A fake clock that jumps to each wake-up: 10 s at 1000 tokens per 100 ms.
        for request in [1u64, 512, 999, 1000, 1001, 65_536] {
            let t0 = Instant::now();
            let mut b = bucket(1000, 0, 100, t0);
            let mut now = t0;
            let mut taken = 0u64;
            while now < t0 + Duration::from_secs(10) {
                match b.wait_for(request, now) {
                    None => {
                        b.consume(request, now);
                        taken += request;
                    }
                    Some(wait) => now += wait,
                }
            }
            // 100 000 refilled plus the initial 1000, within one request of it.
            let expected = 101_000u64;
            assert!(
                taken.abs_diff(expected) <= request,
                "request {request}: {taken} tokens in 10 s"
            );
        }
    }

    #[test]
    fn the_one_time_burst_is_spent_first_and_once() {
        let t0 = Instant::now();
        let mut b = bucket(100, 500, 1000, t0);
        assert_eq!(b.wait_for(400, t0), None);
        b.consume(400, t0);
        assert_eq!((b.burst_left(), b.available(t0)), (100, 100));
        // 150: 100 from the burst, 50 from the bucket.
        b.consume(150, t0);
        assert_eq!((b.burst_left(), b.available(t0)), (0, 50));
        assert_eq!(b.wait_for(100, t0), Some(ms(500)));
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let t0 = Instant::now() + ms(1000);
        let mut b = bucket(1000, 0, 100, t0);
        b.consume(1000, t0);
        assert_eq!(b.available(t0 - ms(500)), 0);
        assert_eq!(b.available(t0 + ms(10)), 100);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = bucket(u64::MAX, u64::MAX, u64::MAX, t0);
        assert_eq!(b.wait_for(u64::MAX, t0), None);
        b.consume(u64::MAX, t0);
        b.consume(u64::MAX, t0);
        assert!(b.wait_for(1, t0).is_some());
        let _ = b.available(t0 + Duration::from_secs(1 << 40));
    }
}
