//! Full-jitter exponential backoff: retry *n* (0-based) waits a uniformly
//! random time in `[0, min(max, base·2ⁿ))`, which spreads retries of many
//! clients apart instead of synchronising them into waves.

use std::time::Duration;

/// The upper bound of the wait before retry `n` (0-based).
pub(crate) fn ceiling(n: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// A random wait before retry `n`; `unit` in `[0, 1)` is the random draw
/// (injected so tests are deterministic).
pub(crate) fn wait(n: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    ceiling(n, base, max).mul_f64(unit.clamp(0.0, 0.999_999))
}

/// A wait drawn from the thread's RNG.
pub(crate) fn jittered(n: u32, base: Duration, max: Duration) -> Duration {
    wait(n, base, max, rand::random::<f64>())
}

/// `Retry-After` (seconds, or an HTTP date) as a wait, capped at `max`.
pub(crate) fn retry_after(value: &str, max: Duration) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(max));
    }
    // An HTTP date in the past or unparseable: no extra wait beyond the cap's sense.
    httpdate_secs_from_now(v).map(|d| d.min(max))
}

/// Seconds from now until an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_secs_from_now(v: &str) -> Option<Duration> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let at = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Duration = Duration::from_millis(25);
    const M: Duration = Duration::from_millis(250);

    #[test]
    fn ceiling_doubles_then_caps() {
        assert_eq!(ceiling(0, B, M), Duration::from_millis(25));
        assert_eq!(ceiling(1, B, M), Duration::from_millis(50));
        assert_eq!(ceiling(3, B, M), Duration::from_millis(200));
        assert_eq!(ceiling(4, B, M), M);
        assert_eq!(ceiling(60, B, M), M);
    }

    #[test]
    fn waits_stay_in_range() {
        assert_eq!(wait(2, B, M, 0.0), Duration::ZERO);
        assert!(wait(2, B, M, 0.9999) < Duration::from_millis(100));
        assert_eq!(wait(2, B, M, 0.5), Duration::from_millis(50));
        for n in 0..10 {
            let w = jittered(n, B, M);
            assert!(w < ceiling(n, B, M).max(Duration::from_nanos(1)));
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("1", M), Some(M));
        assert_eq!(retry_after("0", M), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", M),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", M), None);
    }
}
