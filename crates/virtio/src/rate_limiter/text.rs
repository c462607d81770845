//! Rates as users type them on the command line and in vm.toml: `rate=10M` is 10 MiB
//! per second (suffixes K, M, G are binary; a plain number is bytes per second),
//! `iops=200` is 200 requests per second. Each becomes a bucket holding a tenth of a
//! second's worth (the most that passes at once) that refills in 100 ms.

use thiserror::Error;

use super::BucketConfig;

/// The refill time of the buckets made from per-second rates.
pub const RATE_REFILL_MS: u64 = 100;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RateParseError {
    #[error("invalid rate {0:?}: expected a positive number of bytes per second with an optional K, M or G suffix (binary), e.g. 10M")]
    Bytes(String),
    #[error("invalid rate {0:?}: expected a positive number of operations per second")]
    Ops(String),
}

/// `10M` → 10 MiB per second as a bucket.
pub fn parse_byte_rate(text: &str) -> Result<BucketConfig, RateParseError> {
    let error = || RateParseError::Bytes(text.to_string());
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error());
    }
    let value: u64 = digits.parse().map_err(|_| error())?;
    let per_second = value.checked_mul(1 << shift).ok_or_else(error)?;
    per_second_bucket(per_second).ok_or_else(error)
}

/// `200` → 200 operations per second as a bucket.
pub fn parse_ops_rate(text: &str) -> Result<BucketConfig, RateParseError> {
    let error = || RateParseError::Ops(text.to_string());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error());
    }
    let value: u64 = text.parse().map_err(|_| error())?;
    per_second_bucket(value).ok_or_else(error)
}

/// A bucket passing `per_second` tokens a second; `None` for 0.
pub fn per_second_bucket(per_second: u64) -> Option<BucketConfig> {
    (per_second > 0).then(|| BucketConfig {
        size: per_second.div_ceil(1000 / RATE_REFILL_MS),
        one_time_burst: 0,
        refill_time_ms: RATE_REFILL_MS,
    })
}

/// The per-second rate a bucket allows (size per refill time), rounded down.
pub fn bucket_rate_per_second(bucket: &BucketConfig) -> u64 {
    if bucket.refill_time_ms == 0 {
        return 0;
    }
    let rate = u128::from(bucket.size) * 1000 / u128::from(bucket.refill_time_ms);
    u64::try_from(rate).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates() {
        let b = parse_byte_rate("10M").unwrap();
        assert_eq!((b.size, b.refill_time_ms), (1 << 20, 100));
        assert_eq!(bucket_rate_per_second(&b), 10 << 20);
        assert_eq!(parse_byte_rate("1k").unwrap().size, 103);
        assert_eq!(parse_byte_rate("5").unwrap().size, 1);
        assert_eq!(parse_byte_rate("2G").unwrap().size, (2 << 30) / 10 + 1);
        for bad in [
            "",
            "M",
            "0",
            "0M",
            "-1",
            "1.5M",
            "10MB",
            "99999999999999999999G",
        ] {
            assert!(parse_byte_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ops_rates() {
        assert_eq!(parse_ops_rate("200").unwrap().size, 20);
        for bad in ["", "0", "1k", "x"] {
            assert!(parse_ops_rate(bad).is_err(), "{bad}");
        }
    }
}
