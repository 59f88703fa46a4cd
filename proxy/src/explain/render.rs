//! The plain-text explanation `weft-proxy explain` prints. Stable: the
//! same config and request print the same bytes (golden-tested), so it
//! may be diffed and read by scripts. Its layout is documented in
//! README.md ("weft-proxy explain").

use super::matching::{Host, Outcome, Request};
use super::settings::{percent, RuleView};
use std::fmt::Write;

/// Width of a setting's name column, and of its value column.
const NAME: usize = 22;
const VALUE: usize = 28;

/// The request as understood.
pub(crate) fn request(out: &mut String, req: &Request) {
    let query = req
        .query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "request: {} {}{}{query}",
        req.method, req.authority, req.path
    );
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    for (k, v) in headers {
        let _ = writeln!(out, "  header {k}: {v}");
    }
}

/// What the host and its rules made of the request; true when a rule matches.
pub(crate) fn outcome(out: &mut String, req: &Request, o: &Outcome<'_>) -> bool {
    let host = match o {
        Outcome::NoHost { nearest } => {
            let _ = writeln!(
                out,
                "\nno route: no name matches {}; the proxy answers 404 (x-weft-error: no-route),\n  or passes an intercepted connection through to its original destination",
                req.authority
            );
            let _ = match nearest {
                Some(n) => writeln!(out, "nearest miss: the name {n}"),
                None => writeln!(out, "nearest miss: none (the config names nothing)"),
            };
            return false;
        }
        Outcome::Opaque { found_by, backend } => {
            let _ = writeln!(
                out,
                "\nhost: {} (found by the name {found_by})\nno HTTP route: Backend {} is opaque TCP and no route takes this name; its bytes are forwarded unparsed",
                backend.key(),
                backend.key()
            );
            return false;
        }
        Outcome::Host(h) => h,
    };
    let how = match host.found_by.as_str() {
        w if w.starts_with('*') => format!("the wildcard {w}"),
        n if n == req.authority.to_ascii_lowercase().trim_end_matches('.') => {
            format!("the name {n}")
        }
        n => format!("the name {n} (the authority without its port)"),
    };
    let _ = writeln!(out, "\nhost: {} (found by {how})", host.name);
    rules(out, host);
    match (host.winner, host.nearest_miss()) {
        (Some(w), _) => {
            let _ = writeln!(out, "\nselected: {}", host.candidates[w].label);
            true
        }
        (None, nearest) => {
            let _ = writeln!(
                out,
                "\nno rule matches: the proxy answers 404 (x-weft-error: no-route)"
            );
            if let Some((i, c, miss)) = nearest {
                let _ = writeln!(out, "nearest miss: {}. {}: {}", i + 1, c.label, miss.reason);
            }
            false
        }
    }
}

fn rules(out: &mut String, host: &Host) {
    if host.candidates.is_empty() {
        let _ = writeln!(out, "\nno rules: no route serves HTTP on this name");
        return;
    }
    let _ = writeln!(
        out,
        "\nrules, in precedence order (the first that matches wins):"
    );
    for (i, c) in host.candidates.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, c.label);
        let when = match c.conditions.is_empty() {
            true => "every request".to_owned(),
            false => c.conditions.join(", "),
        };
        let _ = writeln!(out, "       when: {when}");
        let verdict = match (&c.verdict, host.winner) {
            (Ok(()), Some(w)) if w == i => "MATCH".to_owned(),
            (Ok(()), Some(w)) => format!("matches too, but {}. comes first", w + 1),
            (Ok(()), None) => "MATCH".to_owned(),
            (Err(m), _) => format!("no: {}", m.reason),
        };
        let _ = writeln!(out, "       {verdict}");
    }
}

/// The selected rule: filters, mirror, split, and each backend's settings.
pub(crate) fn rule(out: &mut String, r: &RuleView) {
    if !r.filters.is_empty() {
        let _ = writeln!(out, "\nfilters:");
        for f in &r.filters {
            let _ = writeln!(out, "  {f}");
        }
    }
    if let Some(m) = &r.mirror {
        let _ = writeln!(out, "\nmirror: {m}");
    }
    if r.redirects {
        return;
    }
    if r.backends.is_empty() || r.total_weight == 0 {
        let _ = writeln!(
            out,
            "\nbackends: none takes requests; the proxy answers 500 (x-weft-error: no-backend)"
        );
    } else {
        let _ = writeln!(out, "\nbackends (total weight {}):", r.total_weight);
    }
    let width = r.backends.iter().map(|b| b.key.len()).max().unwrap_or(0);
    for b in &r.backends {
        let share = match b.found {
            true if r.total_weight > 0 => percent(b.weight as f64 * 100.0 / r.total_weight as f64),
            true => "0%".to_owned(),
            false => "skipped: no such Backend".to_owned(),
        };
        let _ = writeln!(out, "  {:<width$}  weight {:<6} {share}", b.key, b.weight);
        for f in &b.filters {
            let _ = writeln!(out, "    {f}");
        }
    }
    for b in r.backends.iter().filter(|b| b.found) {
        let _ = writeln!(out, "\nsettings for {}:", b.key);
        for s in &b.sections {
            let _ = writeln!(out, "  {}", s.title);
            for row in &s.rows {
                let _ = writeln!(
                    out,
                    "    {:<NAME$} {:<VALUE$}  {}",
                    row.name, row.value, row.origin
                );
            }
        }
    }
}
