//! Header hygiene between hops.

use http::header::{self, HeaderMap, HeaderValue};

/// The upgrade protocol a request asks for (`Connection: upgrade` + `Upgrade: x`).
pub fn upgrade_requested(h: &HeaderMap) -> Option<HeaderValue> {
    let conn = h.get(header::CONNECTION)?.to_str().ok()?;
    if !conn
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    h.get(header::UPGRADE).cloned()
}
