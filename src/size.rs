//! Parsing sizes given on the command line and in definitions: `512M`, `2G`, `64K`, `1T`,
//! `4096B`. One rule everywhere: a size carries its unit; a plain number is refused, as
//! it would be MiB to some tools and bytes to others.

/// Parse `text` as a size in bytes: a number and a unit, B (bytes) or K, M, G, T, P
/// (powers of 1024, optionally written KiB, MB...). `0` needs no unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "invalid size '{text}': expected a number and a unit such as 512M"
        ));
    }
    let (digits, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None if t.bytes().all(|b| b == b'0') => (t, 1),
        None => {
            return Err(format!(
                "invalid size '{text}': give a unit: B for bytes ({t}B) or K, M, G, T, P \
                 (powers of 1024), e.g. 512M"
            ))
        }
        Some((i, _)) => {
            let unit = t[i..].trim_end_matches(['B', 'b']).trim_end_matches(['i']);
            let mult = match unit.to_ascii_uppercase().as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                "P" => 1 << 50,
                _ => {
                    return Err(format!(
                        "invalid size '{text}': unknown unit (use B, K, M, G, T or P)"
                    ))
                }
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size '{text}': number too large"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size '{text}': too large"))
}

/// A new virtual size for `disk resize`: absolute (`20G`) or relative (`+10G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewSize {
    To(u64),
    Grow(u64),
}

impl NewSize {
    /// The size in bytes for an image of `current` bytes.
    pub fn apply(self, current: u64) -> Result<u64, String> {
        match self {
            NewSize::To(n) => Ok(n),
            NewSize::Grow(n) => current
                .checked_add(n)
                .ok_or_else(|| "the new size is too large".to_string()),
        }
    }
}

/// Parse `20G` or `+10G`.
pub fn parse_new_size(text: &str) -> Result<NewSize, String> {
    match text.strip_prefix('+') {
        Some(rest) => parse_size(rest).map(NewSize::Grow),
        None if text.starts_with('-') => Err(format!(
            "invalid size '{text}': shrink by giving the new size (e.g. 10G), not a difference"
        )),
        None => parse_size(text).map(NewSize::To),
    }
}

/// `bytes` for people: `512 B`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_carry_a_unit() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn plain_numbers_and_bad_sizes_are_refused() {
        let e = parse_size("20").unwrap_err();
        assert!(e.contains("give a unit: B for bytes (20B)"), "{e}");
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-5M").is_err());
        assert!(parse_size("99999999999999999999B").is_err());
        assert!(parse_size("20000000T").is_err());
    }

    #[test]
    fn new_sizes_absolute_or_relative() {
        assert_eq!(parse_new_size("20G"), Ok(NewSize::To(20 << 30)));
        assert_eq!(parse_new_size("+10G"), Ok(NewSize::Grow(10 << 30)));
        assert_eq!(NewSize::Grow(1 << 30).apply(1 << 30), Ok(2 << 30));
        assert!(parse_new_size("-1G").is_err());
        assert!(parse_new_size("+10").is_err());
        assert!(NewSize::Grow(u64::MAX).apply(1).is_err());
    }
}
