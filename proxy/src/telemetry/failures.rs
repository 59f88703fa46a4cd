//! `/failures`: the last N requests that failed or were degraded, each with
//! enough to explain it without a debugger — route, backend, every try with
//! its outcome and the backoff before it, the trace id, and one line of
//! plain words saying what happened (composed by [`cause`]).
//!
//! Written only for a request the proxy answered itself (no route, 403,
//! 429, an upstream it could not reach...), one answered 5xx, or one that
//! needed retries: a request that simply succeeds never touches the ring.
//! The ring is bounded (`--failures-kept`, default 256; 0 turns it off), so
//! a storm of failures costs a fixed amount of memory.

pub(crate) mod cause;
mod entry;

pub(crate) use entry::{EndpointsState, Entry, Outcome, Stop, Try};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The ring of recent failures (see the module header).
pub(crate) struct Failures {
    kept: usize,
    ring: Mutex<VecDeque<Entry>>,
}

/// The `/failures` query: `?backend=NAME&flag=UF&limit=N`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Filter {
    backend: Option<String>,
    flag: Option<String>,
    limit: Option<usize>,
}

impl Filter {
    /// Parses a query string; an unknown key or a bad limit is an error.
    pub(crate) fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "backend" => f.backend = Some(v),
                "flag" => f.flag = Some(v),
                "limit" => {
                    f.limit = Some(
                        v.parse()
                            .map_err(|_| format!("limit must be a whole number, got {v:?}"))?,
                    )
                }
                _ => return Err(format!("unknown filter {k:?} (backend, flag, limit)")),
            }
        }
        Ok(f)
    }

    fn keeps(&self, e: &Entry) -> bool {
        self.backend
            .as_deref()
            .is_none_or(|b| e.backend.as_deref() == Some(b))
            && self
                .flag
                .as_deref()
                .is_none_or(|f| e.flags.split(',').any(|x| x == f))
    }
}

/// `%XX` and `+` as a query string means them (a backend is `ns/name`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Failures {
    /// A ring keeping the last `kept` entries (0: off).
    pub(crate) fn new(kept: usize) -> Failures {
        Failures {
            kept,
            ring: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether failures are kept at all.
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.kept > 0
    }

    /// Keeps `e`, dropping the oldest entry when full.
    pub(crate) fn push(&self, e: Entry) {
        if self.kept == 0 {
            return;
        }
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() >= self.kept {
                ring.pop_back();
            }
            ring.push_front(e);
        }
    }

    /// The entries `filter` keeps, newest first, as `/failures` shows them.
    pub(crate) fn json(&self, filter: &Filter) -> serde_json::Value {
        let list: Vec<serde_json::Value> = match self.ring.lock() {
            Ok(ring) => ring
                .iter()
                .filter(|e| filter.keeps(e))
                .take(filter.limit.unwrap_or(usize::MAX))
                .map(entry_json)
                .collect(),
            Err(_) => Vec::new(),
        };
        serde_json::json!({ "kept": self.kept, "failures": list })
    }
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let tries: Vec<serde_json::Value> = e
        .tries
        .iter()
        .map(|t| {
            serde_json::json!({
                "endpoint": t.endpoint.to_string(),
                "outcome": t.outcome.label(),
                "waitedMs": t.waited.as_secs_f64() * 1000.0,
                "ejected": t.ejected,
            })
        })
        .collect();
    serde_json::json!({
        "time": super::timestamp::rfc3339(e.time),
        "direction": e.direction,
        "authority": e.authority,
        "method": e.method,
        "path": e.path,
        "route": e.route.as_deref(),
        "rule": e.rule,
        "backend": e.backend.as_deref(),
        "endpoint": e.endpoint.map(|a| a.to_string()),
        "status": e.status,
        "flags": e.flags,
        "error": e.error_kind,
        "tries": tries,
        "traceId": e.trace_id.map(hex),
        "cause": cause::line(e),
    })
}

fn hex(id: [u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`);
/// `None` when it is not one, or the id is all zeros.
pub(crate) fn trace_id_of(traceparent: &[u8]) -> Option<[u8; 16]> {
    let hexid = traceparent.get(3..35)?;
    if traceparent.get(2) != Some(&b'-') || traceparent.get(35) != Some(&b'-') {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in hexid.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        id[i] = u8::from_str_radix(s, 16).ok()?;
    }
    (id != [0; 16]).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) fn entry(backend: &str, flags: &str) -> Entry {
        Entry {
            time: std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_486_000_123),
            direction: "outbound",
            authority: "svc".into(),
            method: "GET".into(),
            path: "/".into(),
            route: None,
            rule: None,
            backend: Some(Arc::from(backend)),
            endpoint: None,
            status: 503,
            error_kind: None,
            error: None,
            flags: flags.into(),
            tries: Vec::new(),
            stop: None,
            ejected: Vec::new(),
            endpoints: None,
            overflow: None,
            trace_id: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_n_and_filters() {
        let f = Failures::new(2);
        f.push(entry("default/a", "UF,URX"));
        f.push(entry("default/b", "UO"));
        f.push(entry("default/a", "UT"));
        let all = f.json(&Filter::default());
        assert_eq!(all["kept"], 2);
        let list = all["failures"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{all}");
        assert_eq!(list[0]["flags"], "UT", "newest first");
        assert_eq!(list[1]["flags"], "UO");
        let q = Filter::parse(Some("backend=default%2Fa")).unwrap();
        assert_eq!(f.json(&q)["failures"].as_array().unwrap().len(), 1);
        let q = Filter::parse(Some("flag=UO")).unwrap();
        assert_eq!(f.json(&q)["failures"][0]["backend"], "default/b");
        let q = Filter::parse(Some("limit=1")).unwrap();
        assert_eq!(f.json(&q)["failures"].as_array().unwrap().len(), 1);
        assert!(Filter::parse(Some("limit=x")).is_err());
        assert!(Filter::parse(Some("colour=red")).is_err());
        let off = Failures::new(0);
        off.push(entry("default/a", "UF"));
        assert_eq!(
            off.json(&Filter::default())["failures"],
            serde_json::json!([])
        );
    }

    #[test]
    fn trace_ids_come_from_a_traceparent() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let id = trace_id_of(tp).unwrap();
        assert_eq!(hex(id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace_id_of(b"garbage"), None);
        assert_eq!(
            trace_id_of(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}
