//! Firecracker-style rate limiting of a device's I/O: a bandwidth bucket (bytes) and an
//! operations bucket, either optional. A device asks [`RateLimiter::consume`] before each
//! request (a block request, a network frame); when a bucket is short the request is
//! refused, the device leaves it pending and stops, and the limiter arms its timerfd for
//! the moment the request may go. The VMM polls that fd with the device's backend fds, so
//! the expiry runs the device's queues again. The bucket maths ([`TokenBucket`]) take the
//! time as an argument and are tested on a fake clock.
//!
//! [`RateLimiterHandle`] is how the VMM changes the limits of a running device
//! (`PATCH /drives/{id}`, `PATCH /network-interfaces/{id}`): the new buckets start full and
//! a request the old ones held back is retried at once.

mod bucket;
mod text;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use vmm_sys_util::timerfd::TimerFd;

pub use bucket::{BucketConfig, TokenBucket};
pub use text::{
    bucket_rate_per_second, parse_byte_rate, parse_ops_rate, per_second_bucket, RateParseError,
    RATE_REFILL_MS,
};

use crate::processor::lock;

/// A limiter's buckets; `None` (or a bucket that limits nothing) means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Bytes.
    pub bandwidth: Option<BucketConfig>,
    /// Requests (block requests, frames).
    pub ops: Option<BucketConfig>,
}

impl Limits {
    /// Whether any bucket limits anything.
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some_and(|b| b.limits()) || self.ops.is_some_and(|b| b.limits())
    }
}

#[derive(Debug, Error)]
pub enum RateLimiterError {
    #[error("cannot create the rate limiter's timerfd: {0}")]
    Timer(#[source] std::io::Error),
}

/// A device's limiter: its buckets and the timer that ends a wait.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// When the refused request may go; `None` when nothing waits.
    blocked_until: Option<Instant>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked_until", &self.blocked_until)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with full buckets (and its timerfd, even when `limits` limits nothing, so
    /// limits can be set at run time).
    pub fn new(limits: Limits) -> Result<Self, RateLimiterError> {
        let timer = TimerFd::new().map_err(|e| RateLimiterError::Timer(e.into()))?;
        let now = Instant::now();
        Ok(RateLimiter {
            bandwidth: limits.bandwidth.and_then(|c| TokenBucket::new(c, now)),
            ops: limits.ops.and_then(|c| TokenBucket::new(c, now)),
            timer,
            blocked_until: None,
        })
    }

    /// The timerfd that turns readable when a refused request may go.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Takes `bytes` and one operation now, or refuses and arms the timer.
    pub fn consume(&mut self, bytes: u64) -> bool {
        if self.bandwidth.is_none() && self.ops.is_none() {
            return true;
        }
        self.consume_at(bytes, Instant::now())
    }

    /// [`RateLimiter::consume`] at `now`: both buckets or neither.
    pub fn consume_at(&mut self, bytes: u64, now: Instant) -> bool {
        if let Some(until) = self.blocked_until {
            if now < until {
                return false;
            }
            self.blocked_until = None;
        }
        let bandwidth_wait = self.bandwidth.as_mut().and_then(|b| b.wait_for(bytes, now));
        let ops_wait = self.ops.as_mut().and_then(|b| b.wait_for(1, now));
        match bandwidth_wait.max(ops_wait) {
            None => {
                if let Some(b) = self.bandwidth.as_mut() {
                    b.consume(bytes, now);
                }
                if let Some(b) = self.ops.as_mut() {
                    b.consume(1, now);
                }
                true
            }
            Some(wait) => self.block(now, wait),
        }
    }

    /// Refuses until `now + wait`; when the timer cannot be armed nothing would wake
    /// the device, so the request goes after all.
    fn block(&mut self, now: Instant, wait: Duration) -> bool {
        // A zero duration would disarm the timer.
        let wait = wait.max(Duration::from_nanos(1));
        if let Err(e) = self.timer.reset(wait, None) {
            tracing::warn!("rate limiter: cannot arm its timer, not limiting: {e}");
            return true;
        }
        self.blocked_until = Some(now + wait);
        false
    }

    /// Whether a refused request waits for the timer.
    pub fn is_blocked(&self) -> bool {
        self.blocked_until.is_some()
    }

    /// Replaces the buckets given (`None` keeps a bucket; a bucket that limits nothing
    /// removes it), full, and lets a waiting request be retried at once.
    pub fn update(&mut self, bandwidth: Option<BucketConfig>, ops: Option<BucketConfig>) {
        let now = Instant::now();
        if let Some(config) = bandwidth {
            self.bandwidth = TokenBucket::new(config, now);
        }
        if let Some(config) = ops {
            self.ops = TokenBucket::new(config, now);
        }
        if self.blocked_until.take().is_some() {
            if let Err(e) = self.timer.reset(Duration::from_nanos(1), None) {
                tracing::warn!("rate limiter: cannot wake the device after an update: {e}");
            }
        }
    }
}

/// A limiter shared by its device and the VMM, which may change its limits at run time.
#[derive(Debug, Clone)]
pub struct RateLimiterHandle(Arc<Mutex<RateLimiter>>);

impl RateLimiterHandle {
    pub fn new(limits: Limits) -> Result<Self, RateLimiterError> {
        Ok(RateLimiterHandle(Arc::new(Mutex::new(RateLimiter::new(
            limits,
        )?))))
    }

    /// The limiter's timerfd, for the I/O thread's epoll.
    pub fn timer_fd(&self) -> RawFd {
        lock(&self.0).timer_fd()
    }

    /// See [`RateLimiter::consume`].
    pub fn consume(&self, bytes: u64) -> bool {
        lock(&self.0).consume(bytes)
    }

    /// See [`RateLimiter::update`].
    pub fn update(&self, bandwidth: Option<BucketConfig>, ops: Option<BucketConfig>) {
        lock(&self.0).update(bandwidth, ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, refill_time_ms: u64) -> Option<BucketConfig> {
        Some(BucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms,
        })
    }

    #[test]
    fn no_buckets_never_refuse() {
        let mut limiter = RateLimiter::new(Limits::default()).unwrap();
        for _ in 0..10_000 {
            assert!(limiter.consume(u64::MAX));
        }
        assert!(!limiter.is_blocked());
    }

    #[test]
    fn both_buckets_or_neither() {
        let mut limiter = RateLimiter::new(Limits {
            bandwidth: bucket(1000, 1000),
            ops: bucket(2, 1000),
        })
        .unwrap();
        let t0 = Instant::now();
        assert!(limiter.consume_at(100, t0));
        assert!(limiter.consume_at(100, t0));
        // The ops bucket is empty: the bytes are not taken either.
        assert!(!limiter.consume_at(100, t0));
        assert!(limiter.is_blocked());
        // Still blocked before the deadline (one op back after 500 ms).
        assert!(!limiter.consume_at(100, t0 + Duration::from_millis(499)));
        assert!(limiter.consume_at(800, t0 + Duration::from_millis(500)));
        assert!(!limiter.is_blocked());
    }

    #[test]
    fn a_refusal_arms_the_timer_and_an_update_fires_it_now() {
        let mut limiter = RateLimiter::new(Limits {
            bandwidth: bucket(10, 1_000_000),
            ops: None,
        })
        .unwrap();
        assert!(limiter.consume(10));
        assert!(!limiter.consume(10));
        assert!(limiter.timer.is_armed().unwrap());
        limiter.update(bucket(0, 0), None);
        assert!(!limiter.is_blocked());
        // Fired (1 ns) or about to: a new wait was not started.
        assert!(limiter.consume(1_000_000));
        assert_eq!(limiter.timer.wait().unwrap(), 1);
    }

    #[test]
    fn an_update_keeps_the_buckets_it_does_not_name() {
        let mut limiter = RateLimiter::new(Limits {
            bandwidth: bucket(10, 1_000_000),
            ops: bucket(1, 1_000_000),
        })
        .unwrap();
        limiter.update(None, bucket(100, 1));
        assert!(limiter.consume(10));
        assert!(!limiter.consume(10), "the bandwidth bucket stayed");
    }

    #[test]
    fn limits_say_whether_they_limit() {
        assert!(!Limits::default().limits());
        assert!(!Limits {
            bandwidth: bucket(0, 100),
            ops: bucket(100, 0),
        }
        .limits());
        assert!(Limits {
            bandwidth: None,
            ops: bucket(1, 1),
        }
        .limits());
    }
}
