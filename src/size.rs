//! Parsing sizes given on the command line: `512M`, `2G`, `64K`, `1T`, or a plain number.

/// Parse `text` as a size in bytes; a plain number is in units of `plain_unit` bytes.
pub fn parse_size(text: &str, plain_unit: u64) -> Result<u64, String> {
    let t = text.trim();
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "invalid size '{text}': expected a number such as 512M"
        ));
    }
    let (digits, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, plain_unit),
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
                        "invalid size '{text}': unknown unit (use K, M, G, T or P)"
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
    fn suffixes_and_plain_numbers() {
        assert_eq!(parse_size("512M", 1), Ok(512 << 20));
        assert_eq!(parse_size("2G", 1), Ok(2 << 30));
        assert_eq!(parse_size("64k", 1), Ok(64 << 10));
        assert_eq!(parse_size("1GiB", 1), Ok(1 << 30));
        assert_eq!(parse_size("256", 1 << 20), Ok(256 << 20));
        assert_eq!(parse_size("4096", 1), Ok(4096));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(parse_size("", 1).is_err());
        assert!(parse_size("M", 1).is_err());
        assert!(parse_size("12X", 1).is_err());
        assert!(parse_size("-5M", 1).is_err());
        assert!(parse_size("99999999999999999999", 1).is_err());
        assert!(parse_size("20000000T", 1).is_err());
    }
}
