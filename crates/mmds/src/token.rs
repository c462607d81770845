//! MMDS V2 session tokens. `PUT /latest/api/token` with a lifetime of 1 to 21600 seconds
//! gets a token; later GETs present it in `X-metadata-token`. A token is its expiry time
//! and an HMAC-SHA256 tag over it under a key drawn from getrandom when the VM's MMDS is
//! made, so tokens need no table (nothing for a guest to fill) and cannot be forged or
//! extended; expiry is checked on every use.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MIN_TOKEN_TTL_SECONDS: u32 = 1;
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21_600;
/// Where guests ask for a token.
pub const PATH_TO_TOKEN: &str = "/latest/api/token";

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const TOKEN_BYTES: usize = 8 + TAG_LEN;
/// Longer presented tokens are refused without decoding.
const MAX_TOKEN_TEXT_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("Invalid time to live value provided for token: {0}. Please provide a value between {MIN_TOKEN_TTL_SECONDS} and {MAX_TOKEN_TTL_SECONDS}.")]
    InvalidTtl(u32),
    #[error("Failed to generate a key: {0}")]
    Key(String),
}

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug)]
pub struct TokenAuthority {
    key: [u8; KEY_LEN],
}

impl TokenAuthority {
    /// An authority with a fresh random key.
    pub fn new() -> Result<Self, TokenError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(Self { key })
    }

    fn tag(&self, expiry_ms: u64) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        // HMAC takes keys of any length.
        if let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) {
            mac.update(&expiry_ms.to_le_bytes());
            let full = mac.finalize().into_bytes();
            tag.copy_from_slice(&full[..TAG_LEN]);
        }
        tag
    }

    /// A token valid for `ttl_seconds` from `now` (time since the MMDS was made).
    pub fn issue(&self, ttl_seconds: u32, now: Duration) -> Result<String, TokenError> {
        if !(MIN_TOKEN_TTL_SECONDS..=MAX_TOKEN_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(TokenError::InvalidTtl(ttl_seconds));
        }
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let expiry = now_ms.saturating_add(u64::from(ttl_seconds) * 1000);
        let mut bytes = [0u8; TOKEN_BYTES];
        bytes[..8].copy_from_slice(&expiry.to_le_bytes());
        bytes[8..].copy_from_slice(&self.tag(expiry));
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Whether `token` was issued here and has not expired at `now`.
    pub fn is_valid(&self, token: &str, now: Duration) -> bool {
        if token.len() > MAX_TOKEN_TEXT_LEN {
            return false;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(token) else {
            return false;
        };
        let Ok(bytes) = <[u8; TOKEN_BYTES]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&bytes[..8]);
        let expiry = u64::from_le_bytes(expiry);
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(&expiry.to_le_bytes());
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(&bytes[8..]).is_ok() && now_ms < expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_valid_until_they_expire() {
        let ta = TokenAuthority::new().unwrap();
        let t0 = Duration::from_secs(100);
        let token = ta.issue(2, t0).unwrap();
        assert!(ta.is_valid(&token, t0));
        assert!(ta.is_valid(&token, t0 + Duration::from_millis(1999)));
        assert!(!ta.is_valid(&token, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn ttl_bounds() {
        let ta = TokenAuthority::new().unwrap();
        assert_eq!(ta.issue(0, Duration::ZERO), Err(TokenError::InvalidTtl(0)));
        assert_eq!(
            ta.issue(21_601, Duration::ZERO),
            Err(TokenError::InvalidTtl(21_601))
        );
        assert!(ta.issue(21_600, Duration::ZERO).is_ok());
        assert!(ta.issue(1, Duration::ZERO).is_ok());
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let ta = TokenAuthority::new().unwrap();
        let other = TokenAuthority::new().unwrap();
        let now = Duration::from_secs(1);
        let token = other.issue(60, now).unwrap();
        assert!(!ta.is_valid(&token, now));
        // Extending the expiry breaks the tag.
        let mine = ta.issue(60, now).unwrap();
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&mine)
            .unwrap();
        bytes[7] = 0x7f;
        let forged = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert!(!ta.is_valid(&forged, now));
        for junk in ["", "x", "!!!!", &"A".repeat(65), &"A".repeat(32)] {
            assert!(!ta.is_valid(junk, now), "{junk}");
        }
    }
}
