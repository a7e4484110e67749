//! Durations (`500ms`, `10s`, `1m30s`) and sizes (`50MiB`, `52428800`).

use std::time::Duration;

/// Parse a duration: one or more `<number><unit>` parts with units `ms`,
/// `s`, `m`, `h`, `d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (like `500ms`, `10s`, `1m30s`)"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (like `500ms`, `10s`, `1m30s`)"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(format!(
                    "`{text}`: a unit is missing after `{number}` (ms, s, m, h, d)"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                ))
            }
        };
        total += Duration::from_secs_f64(number * scale);
    }
    Ok(total)
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
    Ok((number * scale as f64).round() as u64)
}

/// Render a duration the way users write it (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 {
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
        if n >= len && n % len == 0 {
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

    #[test]
    fn formats_round_trip() {
        for d in ["1m30s", "500ms", "10s", "2h"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
        assert_eq!(format_size(50 << 20), "50MiB");
        assert_eq!(format_size(1234), "1234");
    }
}
