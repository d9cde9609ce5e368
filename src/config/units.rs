//! Config values with units: durations (`10s`) and report-mode expiry dates. Pure.

use std::time::Duration;

use crate::calendar::{days_from_civil, days_in_month};

/// Unix seconds at which report mode ends: the end of a `YYYY-MM-DD` day (UTC), or an
/// RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_report_until(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time.strip_suffix(['Z', 'z'])?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if date.len() != 10
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = match time {
        None => 86_400,
        Some(time) => {
            let mut hms = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
            let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
            if time.len() != 8 || h > 23 || m > 59 || s > 59 {
                return None;
            }
            h * 3600 + m * 60 + s
        }
    };
    u64::try_from(days)
        .ok()?
        .checked_mul(86_400)?
        .checked_add(seconds)
}

/// A leading whole number and what follows it: `("64", "MiB")` from `64MiB`.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(text)?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => None,
    }
}

/// A size in bytes: a bare number, or a number with a unit: `B`, `KiB`/`MiB`/`GiB`/`TiB`
/// (powers of 1024) or `KB`/`MB`/`GB`/`TB` (powers of 1000), optionally after one space.
/// Overflow is `None`, never a wrapped value.
pub fn parse_size(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}
