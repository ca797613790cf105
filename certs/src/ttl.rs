//! Lifetimes on the command line: a number and a unit (`90s`, `30m`, `24h`, `365d`).

use std::time::Duration;

/// Parses `N` + `s`/`m`/`h`/`d`; at least one second, at most 100 years.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use a number and s, m, h or d (e.g. 24h)"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("invalid duration {s:?}: use a number and s, m, h or d (e.g. 24h)"))?;
    if secs == 0 || secs > 100 * 365 * 86_400 {
        return Err(format!("duration {s:?} must be between 1s and 100 years"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bad_input() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("365d"), Ok(Duration::from_secs(365 * 86_400)));
        for bad in ["", "h", "24", "24y", "0h", "-1h", "99999999999d", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
