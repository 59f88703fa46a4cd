//! Small encodings the fake needs and the workspace has no crate for:
//! base64 (standard and URL-safe), RFC 3339 timestamps, random UIDs and
//! generated-name suffixes. Kept here so no file pulls in a new dependency.

use std::time::{SystemTime, UNIX_EPOCH};

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(data: &[u8], table: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (PEM bodies, kubeconfig `*-data`, webhook patches).
pub fn b64_std(data: &[u8]) -> String {
    encode(data, STD, true)
}

/// URL-safe base64 without padding (JWT segments, continue tokens).
pub fn b64_url(data: &[u8]) -> String {
    encode(data, URL, false)
}

/// Decodes either alphabet, with or without padding. On failure returns the
/// offset of the first bad byte, which is what Go's decoder reports.
pub fn b64_decode(s: &str) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let bytes = s.trim_end_matches('=').as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return Err(i),
        } as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err(bytes.len());
    }
    Ok(out)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-29T17:56:49Z` for a Unix time, as `metav1.Time` serialises.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The current time as `metav1.Time`.
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// Whether `s` is a `metav1.MicroTime`: RFC 3339 with exactly six
/// fractional digits (`2006-01-02T15:04:05.000000Z07:00`).
pub fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 27 || b[19] != b'.' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let frac_ok = digits(20..26);
    let zone = &s[26..];
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':');
    digits(0..4) && b[4] == b'-' && b[10] == b'T' && frac_ok && zone_ok
}

/// A random version-4 UUID, the shape of `metadata.uid`.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Five characters from the alphabet the apiserver uses for `generateName`
/// (no vowels, no look-alike digits).
pub fn name_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHA[rand::random_range(0..ALPHA.len())] as char)
        .collect()
}

/// Go's `%q` of a string slice, as apiserver messages print them:
/// `["weft"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
            assert_eq!(b64_decode(&b64_std(data)).unwrap(), data);
            assert_eq!(b64_decode(&b64_url(data)).unwrap(), data);
        }
        assert_eq!(b64_decode("eyJ!"), Err(3));
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(1_795_975_247), "2026-11-29T18:00:47Z");
        assert!(is_micro_time("2026-11-29T18:03:21.200013Z"));
        assert!(!is_micro_time("2026-11-29T18:03:21Z"));
    }
}
