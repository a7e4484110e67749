//! Durations (`500ms`, `10s`, `1m30s`) and sizes (`50MiB`, `52428800`).

use std::time::Duration;

/// The longest duration accepted: 100 years. Longer is a typo, and a
/// deadline `now + d` past what the clock can hold would panic (issue 12
/// item 7: `stop_timeout: 999999999999999d` aborted `check`).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parse a duration with [`humantime`] (`500ms`, `1m30s`, `1.5s`, `2d`;
/// also its longer spellings such as `2min` or `1week`). Two rules of ours
/// wrap it: a bare number is seconds (humantime wants a unit), and at most
/// [`MAX_DURATION`]. Its errors are reworded to say what to write instead.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let t = text.trim();
    let too_long = || format!("`{text}` is too long: at most 100 years (`36500d`)");
    // humantime reads `M` as a month; a user of most other tools means
    // minutes. Neither guess is safe for a timeout: refuse it.
    if t.split(|c: char| !c.is_alphabetic())
        .any(|unit| unit == "M")
    {
        return Err(format!(
            "`{text}`: `M` is ambiguous (minutes or months); write `m` for minutes or days as `30d`"
        ));
    }
    let parsed = match t.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(t),
    };
    match parsed {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) | Err(E::NumberOverflow) => Err(too_long()),
        Err(E::Empty) => Err("empty duration".into()),
        Err(E::UnknownUnit { unit, value, .. }) if unit.is_empty() => Err(format!(
            "`{text}`: a unit is missing after `{value}` (ms, s, m, h, d)"
        )),
        Err(E::UnknownUnit { unit, .. }) => Err(format!(
            "`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a duration (like `500ms`, `10s`, `1m30s`)"
        )),
    }
}

/// Parse a size: bytes, or a number with a unit `B`, `KB`/`MB`/`GB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024; `K`, `M`, `G`
/// alone mean the same as these, as in most tools users know).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let number: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (like `50MiB` or `52428800`)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "`{text}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = (number * scale as f64).round();
    // `as` would saturate silently: 99999999999GiB is a typo, not 16 EiB.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large a size"));
    }
    Ok(bytes as u64)
}

/// Render a duration the way users write it (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut out = String::new();
    for (unit, len) in [("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// Render a size with a binary unit when it is a whole number of one.
pub fn format_size(n: u64) -> String {
    for (unit, len) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= len && n.is_multiple_of(len) {
            return format!("{}{unit}", n / len);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let cases = [
            ("500ms", 500),
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("3", 3_000),
            ("1.5s", 1_500),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("10x")
            .unwrap_err()
            .contains("unknown unit `x`"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("").is_err());
        // A month to humantime, a minute to most users: refused, not guessed.
        assert!(parse_duration("1M").unwrap_err().contains("ambiguous"));
        assert!(parse_duration("1h1M").unwrap_err().contains("ambiguous"));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("50MiB").unwrap(), 50 << 20);
        assert_eq!(parse_size("52428800").unwrap(), 52_428_800);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
    }

    /// Issue 12 item 7: no text panics a parser, and every duration
    /// accepted can be added to the clock. Exhaustive over short strings of
    /// the tokens users type, then pseudo-random longer ones (fixed seed).
    #[test]
    fn no_duration_size_or_date_text_panics() {
        const TOKENS: [&str; 24] = [
            "0",
            "1",
            "9",
            "31",
            "2026",
            "999999999999999",
            "1e9",
            ".",
            "-",
            ":",
            " ",
            "T",
            "Z",
            "ms",
            "s",
            "m",
            "h",
            "d",
            "KiB",
            "GB",
            "T",
            "é",
            "NaN",
            "inf",
        ];
        let check = |t: &str| {
            if let Ok(d) = parse_duration(t) {
                assert!(d <= MAX_DURATION, "{t}");
                assert!(std::time::Instant::now().checked_add(d).is_some(), "{t}");
            }
            let _ = parse_size(t);
            let _ = crate::persist::read_date(t);
            let _ = crate::persist::at_arg(t);
        };
        for a in TOKENS {
            for b in TOKENS {
                for c in TOKENS {
                    check(&format!("{a}{b}{c}"));
                }
            }
        }
        // xorshift64: a bounded, reproducible stream of longer strings.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut t = String::new();
            for _ in 0..1 + x % 8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t.push_str(TOKENS[(x % TOKENS.len() as u64) as usize]);
            }
            check(&t);
        }
        for t in [
            "999999999999999d",
            "18446744073709551615",
            "36501d",
            "1e400s",
        ] {
            assert!(parse_duration(t).is_err(), "{t}");
        }
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for d in ["1m30s", "500ms", "10s", "2h"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
        assert_eq!(format_size(50 << 20), "50MiB");
        assert_eq!(format_size(1234), "1234");
    }
}
