//! What the selected rule does with a request: its filters, its mirror,
//! its backend split, and each backend's effective settings, every value
//! with where it came from (`resilience::effective`, the twin of the
//! proxy's own merge). TrafficPolicy fields this module does not know by
//! name are still shown, read generically from the policy's spec, so a
//! new field is explained before anyone writes a line for it here.

use crate::pipeline::compile::policy_of;
use crate::resilience::effective::{Effective, Origin, RouteSide, Sourced};
use serde_json::Value;
use std::time::Duration;
use weft_mesh::config::defaults as d;
use weft_mesh::config::policy::{RetryCondition, TrafficPolicySpec};
use weft_mesh::config::route::{BackendRef, Filter, HeaderModifier, PathModifier};
use weft_mesh::config::{BackendSpec, ConfigSet, Dur, Resource};
use weft_mesh::names::MatchRef;

/// The selected rule, ready to print.
pub(crate) struct RuleView {
    pub(crate) filters: Vec<String>,
    /// A `RequestRedirect`: the proxy answers it, no backend is called.
    pub(crate) redirects: bool,
    pub(crate) mirror: Option<String>,
    pub(crate) total_weight: u64,
    pub(crate) backends: Vec<BackendView>,
}

/// One backendRef of the rule.
pub(crate) struct BackendView {
    /// `namespace/name`.
    pub(crate) key: String,
    pub(crate) weight: u32,
    /// The backendRef's own filters.
    pub(crate) filters: Vec<String>,
    /// False when no Backend of that key exists (the proxy skips the ref).
    pub(crate) found: bool,
    pub(crate) sections: Vec<Section>,
}

/// A group of settings (`timeouts`, `retry`, ...).
pub(crate) struct Section {
    pub(crate) title: &'static str,
    pub(crate) rows: Vec<Row>,
}

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) origin: String,
}

/// The rule `at` names (None: `backend`'s implicit catch-all).
pub(crate) fn rule_view(
    set: &ConfigSet,
    at: Option<&MatchRef>,
    implicit: Option<&Resource<BackendSpec>>,
) -> RuleView {
    let Some(m) = at else {
        let backends = implicit
            .map(|b| vec![backend_view(set, b.key(), 1, &[], RouteSide::default())])
            .unwrap_or_default();
        return RuleView {
            filters: Vec::new(),
            redirects: false,
            mirror: None,
            total_weight: backends.len() as u64,
            backends,
        };
    };
    let (route_key, ns, filters, refs, route) = match m.grpc {
        true => {
            let r = &set.grpc_routes[m.route];
            let rule = &r.spec.rules[m.rule];
            (
                r.key(),
                &r.meta.namespace,
                &rule.filters,
                &rule.backend_refs,
                None,
            )
        }
        false => {
            let r = &set.http_routes[m.route];
            let rule = &r.spec.rules[m.rule];
            (
                r.key(),
                &r.meta.namespace,
                &rule.filters,
                &rule.backend_refs,
                Some(rule),
            )
        }
    };
    let side = RouteSide {
        key: &route_key,
        timeouts: route.and_then(|r| r.timeouts.as_ref()),
        retry: route.and_then(|r| r.retry.as_ref()),
    };
    let backends: Vec<BackendView> = refs
        .iter()
        .map(|b| {
            let weight = b.weight.unwrap_or(d::BACKEND_REF_WEIGHT);
            backend_view(set, ref_key(b, ns), weight, &b.filters, side)
        })
        .collect();
    RuleView {
        filters: filters.iter().filter_map(filter).collect(),
        redirects: filters.iter().any(|f| f.request_redirect.is_some()),
        mirror: filters
            .iter()
            .find_map(|f| f.request_mirror.as_ref())
            .map(|m| {
                format!(
                    "{}, {} of requests (a copy; its answer is dropped; never retried)",
                    ref_key(&m.backend_ref, ns),
                    percent(m.per_million() as f64 / 10_000.0)
                )
            }),
        // As the proxy counts it: only backends that exist take a share.
        total_weight: backends
            .iter()
            .filter(|b| b.found)
            .map(|b| b.weight as u64)
            .sum(),
        backends,
    }
}

fn ref_key(b: &BackendRef, route_ns: &str) -> String {
    format!("{}/{}", b.namespace.as_deref().unwrap_or(route_ns), b.name)
}

/// `50%`, `33.33%`: at most two decimals, no trailing zeros.
pub(crate) fn percent(p: f64) -> String {
    let s = format!("{p:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn backend_view(
    set: &ConfigSet,
    key: String,
    weight: u32,
    filters: &[Filter],
    side: RouteSide<'_>,
) -> BackendView {
    let found = set.backends.iter().find(|b| b.key() == key);
    let policy = found.and_then(|b| policy_of(set, b));
    let sections = match found {
        Some(_) => sections(policy, side),
        None => Vec::new(),
    };
    BackendView {
        key,
        weight,
        filters: filters.iter().filter_map(filter).collect(),
        found: found.is_some(),
        sections,
    }
}

fn row<T>(name: &str, s: &Sourced<T>, show: impl Fn(&T) -> String) -> Row {
    Row {
        name: name.to_owned(),
        value: show(&s.value),
        origin: s.origin.to_string(),
    }
}

fn dur(d: &Duration) -> String {
    Dur(*d).to_string()
}

fn maybe_dur(d: &Option<Duration>) -> String {
    d.as_ref().map(dur).unwrap_or_else(|| "none".into())
}

fn size(n: &u64) -> String {
    match n {
        n if *n > 0 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if *n > 0 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Every setting of one backend under one rule, grouped.
fn sections(policy: Option<&Resource<TrafficPolicySpec>>, side: RouteSide<'_>) -> Vec<Section> {
    let key = policy.map(|p| p.key());
    let spec = policy.map(|p| &p.spec);
    let e = Effective::new(key.as_deref().zip(spec), side, d::POOL_IDLE_TIMEOUT);
    let num = |n: &u32| n.to_string();
    let from = Origin::Policy(key.clone().unwrap_or_default()).to_string();
    // The spec as the user wrote it, for fields read generically.
    let json = spec
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let mut out = vec![
        Section {
            title: "timeouts",
            rows: vec![
                row("request", &e.request_timeout, maybe_dur),
                row("per try", &e.per_try_timeout, maybe_dur),
                row("connect", &e.connect_timeout, dur),
                row("pool idle", &e.idle_timeout, dur),
            ],
        },
        Section {
            title: "retry",
            rows: vec![
                row("attempts", &e.attempts, |a| {
                    format!("{a} (after the first try)")
                }),
                row("retry on", &e.retry_on, |on| {
                    let names: Vec<&str> = RetryCondition::ALL
                        .iter()
                        .filter(|c| on.has(**c))
                        .map(|c| c.name())
                        .collect();
                    names.join(", ")
                }),
                row("codes", &e.codes, |c| match c.is_empty() {
                    true => "none".into(),
                    false => c.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
                }),
                row("non-idempotent", &e.non_idempotent, |b| b.to_string()),
                row("backoff base", &e.backoff_base, dur),
                row("backoff max", &e.backoff_max, dur),
                row("max buffered body", &e.max_buffered_body, size),
                row("budget", &e.budget_percent, |p| format!("{p}% of requests")),
                row("budget floor", &e.budget_min_per_second, |n| {
                    format!("{n} per second")
                }),
            ],
        },
        Section {
            title: "circuit breaker",
            rows: vec![
                row("max connections", &e.max_connections, num),
                row("max pending", &e.max_pending_requests, num),
                row("max requests", &e.max_requests, num),
                row("max retries", &e.max_retries, num),
            ],
        },
        Section {
            title: "outlier detection",
            rows: vec![
                row("consecutive failures", &e.consecutive_failures, num),
                row("interval", &e.interval, dur),
                row("base ejection", &e.base_ejection, dur),
                row("max ejection", &e.max_ejection, dur),
                row("max ejected", &e.max_ejection_percent, |p| format!("{p}%")),
                row("panic threshold", &e.panic_threshold, |p| {
                    format!("{p}% healthy")
                }),
            ],
        },
        Section {
            title: "load balancer",
            rows: vec![row("policy", &e.load_balancer, |p| format!("{p:?}"))],
        },
    ];
    // Fields of the sections above that are not shown by name yet (e.g. a
    // new `outlierDetection` knob) are shown as written.
    let known: [(&str, &[&str]); 4] = [
        (
            "retry",
            &[
                "attempts",
                "retryOn",
                "codes",
                "nonIdempotent",
                "perTryTimeout",
                "backoff",
                "budget",
                "maxBufferedBody",
            ],
        ),
        (
            "circuitBreaker",
            &[
                "maxConnections",
                "maxPendingRequests",
                "maxRequests",
                "maxRetries",
            ],
        ),
        (
            "outlierDetection",
            &[
                "consecutiveFailures",
                "interval",
                "baseEjectionTime",
                "maxEjectionTime",
                "maxEjectionPercent",
            ],
        ),
        ("loadBalancer", &["policy"]),
    ];
    for ((field, names), section) in known.iter().zip([1, 2, 3, 4]) {
        let extra = match &json[field] {
            Value::Object(o) => {
                let mut fields: Vec<(&String, &Value)> = o
                    .iter()
                    .filter(|(k, v)| !names.contains(&k.as_str()) && !v.is_null())
                    .collect();
                fields.sort_by_key(|(k, _)| *k);
                fields
                    .into_iter()
                    .flat_map(|(k, v)| flatten(k, v))
                    .collect()
            }
            _ => Vec::new(),
        };
        for (name, value) in extra {
            out[section].rows.push(Row {
                name,
                value,
                origin: from.clone(),
            });
        }
    }
    // `outlierDetection.successRate` is opt-in: off unless written.
    if json["outlierDetection"]["successRate"].is_null() {
        out[3].rows.push(Row {
            name: "success rate".into(),
            value: "off".into(),
            origin: "default".into(),
        });
    }
    // Whole blocks, off/none unless the policy writes them, and anything
    // else the policy sets: shown as written.
    let blocks = [
        ("health check", "healthCheck", "off"),
        ("tls", "tls", "mTLS if the endpoint has an identity"),
        ("fault", "fault", "none"),
        ("rate limit", "rateLimit", "none"),
        ("hedge", "hedge", "none"),
    ];
    let mut rows = Vec::new();
    for (name, field, default) in blocks {
        rows.extend(block(name, field, &json[field], default, &from));
    }
    let shown = [
        "targetRef",
        "loadBalancer",
        "connectTimeout",
        "retry",
        "circuitBreaker",
        "outlierDetection",
        "panicThreshold",
        "connectionPool",
    ];
    if let Value::Object(o) = &json {
        let mut fields: Vec<(&String, &Value)> = o.iter().collect();
        fields.sort_by_key(|(k, _)| *k);
        for (k, v) in fields {
            let named = shown.contains(&k.as_str()) || blocks.iter().any(|b| b.1 == k);
            if !named && !v.is_null() {
                rows.extend(flatten(k, v).into_iter().map(|(name, value)| Row {
                    name,
                    value,
                    origin: from.clone(),
                }));
            }
        }
    }
    out.push(Section {
        title: "other",
        rows,
    });
    out
}

/// A policy block's rows as written (`fault.abort.httpStatus`), or one
/// row `name: default` when absent.
fn block(name: &str, field: &str, v: &Value, default: &str, from: &str) -> Vec<Row> {
    match v {
        Value::Null => vec![Row {
            name: name.to_owned(),
            value: default.to_owned(),
            origin: "default".into(),
        }],
        v => flatten(field, v)
            .into_iter()
            .map(|(name, value)| Row {
                name,
                value,
                origin: from.to_owned(),
            })
            .collect(),
    }
}

/// `(path, value)` for every scalar under `v` (`fault.abort.httpStatus`);
/// lists of scalars on one line.
fn flatten(path: &str, v: &Value) -> Vec<(String, String)> {
    match v {
        Value::Object(o) if o.values().all(Value::is_null) => vec![(path.to_owned(), "{}".into())],
        Value::Object(o) => {
            // Sorted by name whatever the map's own order.
            let mut fields: Vec<(&String, &Value)> =
                o.iter().filter(|(_, v)| !v.is_null()).collect();
            fields.sort_by_key(|(k, _)| *k);
            fields
                .into_iter()
                .flat_map(|(k, v)| flatten(&format!("{path}.{k}"), v))
                .collect()
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            vec![(path.to_owned(), items.join(", "))]
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, x)| flatten(&format!("{path}[{i}]"), x))
            .collect(),
        v => vec![(path.to_owned(), scalar(v))],
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A filter in words (a mirror is shown on its own line).
fn filter(f: &Filter) -> Option<String> {
    if let Some(m) = &f.request_header_modifier {
        return Some(format!("RequestHeaderModifier: {}", headers(m)));
    }
    if let Some(m) = &f.response_header_modifier {
        return Some(format!("ResponseHeaderModifier: {}", headers(m)));
    }
    if let Some(r) = &f.request_redirect {
        let mut parts = Vec::new();
        if let Some(s) = &r.scheme {
            parts.push(format!("scheme {s}"));
        }
        if let Some(h) = &r.hostname {
            parts.push(format!("hostname {h}"));
        }
        if let Some(p) = &r.path {
            parts.push(path_modifier(p));
        }
        if let Some(p) = r.port {
            parts.push(format!("port {p}"));
        }
        parts.push(format!("status {}", r.status_code.unwrap_or(302)));
        return Some(format!(
            "RequestRedirect: {} (the proxy answers the redirect itself; no backend is called)",
            parts.join(", ")
        ));
    }
    if let Some(r) = &f.url_rewrite {
        let mut parts = Vec::new();
        if let Some(h) = &r.hostname {
            parts.push(format!("hostname {h}"));
        }
        if let Some(p) = &r.path {
            parts.push(path_modifier(p));
        }
        return Some(format!("URLRewrite: {}", parts.join(", ")));
    }
    None
}

fn headers(m: &HeaderModifier) -> String {
    let mut parts = Vec::new();
    for h in &m.set {
        parts.push(format!("set {}: {}", h.name, h.value));
    }
    for h in &m.add {
        parts.push(format!("add {}: {}", h.name, h.value));
    }
    for n in &m.remove {
        parts.push(format!("remove {n}"));
    }
    parts.join("; ")
}

fn path_modifier(p: &PathModifier) -> String {
    match (&p.replace_full_path, &p.replace_prefix_match) {
        (Some(full), _) => format!("path replaced by {full}"),
        (None, Some(prefix)) => format!("matched prefix replaced by {prefix}"),
        (None, None) => format!("path {:?}", p.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(percent(50.0), "50%");
        assert_eq!(percent(100.0 / 3.0), "33.33%");
        assert_eq!(percent(0.5), "0.5%");
        assert_eq!(size(&(64 * 1024)), "64KiB");
        assert_eq!(size(&(1 << 20)), "1MiB");
        assert_eq!(size(&1000), "1000 bytes");
        let v: Value = serde_json::json!({"abort": {"httpStatus": 503, "percent": 10.5},
            "headers": [{"name": "x-weft-fault", "value": "on"}], "codes": [1, 2]});
        assert_eq!(
            flatten("fault", &v),
            [
                ("fault.abort.httpStatus".to_owned(), "503".to_owned()),
                ("fault.abort.percent".into(), "10.5".into()),
                ("fault.codes".into(), "1, 2".into()),
                ("fault.headers[0].name".into(), "x-weft-fault".into()),
                ("fault.headers[0].value".into(), "on".into()),
            ]
        );
    }
}
