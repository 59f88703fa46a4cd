//! The proxy's Prometheus metrics.
//!
//! Label lookups (which hash label sets under a read lock) happen when a
//! snapshot is compiled: each route/backend pair resolves its counters once,
//! and the request path only bumps atomics.

use super::histogram::LatencyHistogram;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod labels;

pub(crate) use labels::*;

/// All metric families, registered once at start.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, LatencyHistogram>,
    pub(crate) active_connections: Family<DirectionLabels, Gauge>,
    pub(crate) connections: Family<DirectionLabels, Counter>,
    pub(crate) tcp_bytes: Family<DirectionLabels, Counter>,
    /// Inbound connections or requests refused: `plaintext` (strict mode), `forbidden` (authz).
    pub(crate) inbound_rejected: Family<ReasonLabels, Counter>,
    /// Connections and requests a listener refused at its limits.
    pub(crate) listener_refused: Family<ListenerLimitLabels, Counter>,
    pub(crate) config_version: Gauge<i64, AtomicI64Compat>,
    /// When this proxy's mesh certificate expires (Unix seconds; 0 without one).
    pub(crate) cert_expiry: Gauge<i64, AtomicI64Compat>,
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    pub(crate) upstream_connects: Family<ResultLabels, Counter>,
    pub(crate) retries: Family<BackendResultLabels, Counter>,
    pub(crate) hedges: Family<BackendResultLabels, Counter>,
    pub(crate) overflows: Family<OverflowLabels, Counter>,
    pub(crate) ejections: Family<BackendReasonLabels, Counter>,
    pub(crate) ejected_endpoints: Family<BackendLabels, Gauge>,
    pub(crate) health_checks: Family<BackendResultLabels, Counter>,
    pub(crate) panic_mode: Family<BackendLabels, Gauge>,
    pub(crate) limit_active: Family<LimitLabels, Gauge>,
    pub(crate) limit_max: Family<LimitLabels, Gauge>,
    pub(crate) process_cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) process_resident_bytes: Gauge,
    pub(crate) process_open_fds: Gauge,
    /// Tokio tasks alive (spawned, not yet finished), read at scrape.
    pub(crate) runtime_alive_tasks: Gauge,
    trace_spans_exported: Counter,
    trace_spans_dropped: Family<ReasonLabels, Counter>,
    tls_handshakes: Family<TlsLabels, Counter>,
    /// Inbound requests refused by a local rate limit: `total`, `identity`, `override`.
    rate_limited: Family<RateLimitLabels, Counter>,
    /// RequestMirror copies by mirror backend and result (`http::mirror`).
    pub(crate) mirrors: Family<BackendResultLabels, Counter>,
    /// Injected faults by backend and kind (`resilience::fault`).
    pub(crate) faults: Family<BackendKindLabels, Counter>,
}

/// prometheus-client's gauge wants an atomic type; we use its default i64 one.
pub(crate) type AtomicI64Compat = std::sync::atomic::AtomicI64;

/// Handles for one (direction, route, backend) triple, resolved once.
#[derive(Clone, Debug)]
pub(crate) struct RouteMetrics {
    by_class: [Counter; 6],
    pub(crate) latency: LatencyHistogram,
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

impl RouteMetrics {
    /// Counts one response with this status.
    pub(crate) fn record(&self, status: u16, elapsed: std::time::Duration) {
        let idx = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[idx].inc();
        self.latency.observe(elapsed);
    }
}

/// Handles for one backend's own series, resolved when the backend is built.
#[derive(Clone, Debug)]
pub(crate) struct BackendMetrics {
    retries_sent: Counter,
    retries_succeeded: Counter,
    retries_budget_exhausted: Counter,
    retries_limit: Counter,
    /// By the limit hit, in [`LIMITS`] order.
    overflows: [Counter; 4],
    /// By reason, in [`EJECTION_REASONS`] order.
    ejections: [Counter; 2],
    pub(crate) ejected_endpoints: Gauge,
    pub(crate) panic_mode: Gauge,
    health_pass: Counter,
    health_fail: Counter,
    /// `weft_hedges_total` by [`HEDGE_RESULTS`].
    pub(crate) hedges: [Counter; 3],
}

/// What came of a hedge, for `weft_hedges_total{result}`: indexes
/// `BackendMetrics::hedges`.
pub(crate) const HEDGE_RESULTS: [&str; 3] = ["sent", "won", "no-budget"];

/// The concurrency limits, as metric labels.
pub(crate) const LIMITS: [&str; 4] = ["connections", "pending", "requests", "retries"];

/// What came of a retry, for `weft_retries_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryResult {
    Sent,
    Succeeded,
    BudgetExhausted,
    Limit,
}

impl BackendMetrics {
    /// Counts one ejection for `reason` (one of [`EJECTION_REASONS`]).
    pub(crate) fn ejection(&self, reason: &str) {
        let i = usize::from(reason != EJECTION_REASONS[0]);
        self.ejections[i].inc();
    }

    pub(crate) fn retry(&self, r: RetryResult) {
        match r {
            RetryResult::Sent => &self.retries_sent,
            RetryResult::Succeeded => &self.retries_succeeded,
            RetryResult::BudgetExhausted => &self.retries_budget_exhausted,
            RetryResult::Limit => &self.retries_limit,
        }
        .inc();
    }

    /// Counts a request refused by `limit` (one of [`LIMITS`]).
    pub(crate) fn overflow(&self, limit: &str) {
        if let Some(i) = LIMITS.iter().position(|l| *l == limit) {
            self.overflows[i].inc();
        }
    }

    /// Counts one active health check.
    pub(crate) fn health_check(&self, passed: bool) {
        match passed {
            true => self.health_pass.inc(),
            false => self.health_fail.inc(),
        };
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one mTLS handshake (`direction`: inbound or outbound).
    pub(crate) fn tls_handshake(&self, direction: &'static str, r: Result<(), &std::io::Error>) {
        let result = crate::tls::handshake::result(&r);
        self.tls_handshakes
            .get_or_create(&TlsLabels { direction, result })
            .inc();
    }

    /// The trace exporter's counters.
    pub(crate) fn trace_stats(&self) -> super::trace::Stats {
        let dropped = |reason| {
            self.trace_spans_dropped
                .get_or_create(&ReasonLabels { reason })
                .clone()
        };
        super::trace::Stats {
            exported: self.trace_spans_exported.clone(),
            dropped_queue_full: dropped("queue_full"),
            dropped_export_failed: dropped("export_failed"),
        }
    }

    /// The series of backend `key` (`namespace/name`), all present from
    /// now on (at zero), so dashboards and `rate()` see 0, not "no data".
    pub(crate) fn backend(&self, key: &str) -> BackendMetrics {
        let retries = |result| {
            self.retries
                .get_or_create(&BackendResultLabels {
                    backend: key.to_owned(),
                    result,
                })
                .clone()
        };
        let labels = BackendLabels {
            backend: key.to_owned(),
        };
        let health = |result| {
            self.health_checks
                .get_or_create(&BackendResultLabels {
                    backend: key.to_owned(),
                    result,
                })
                .clone()
        };
        BackendMetrics {
            retries_sent: retries("sent"),
            retries_succeeded: retries("succeeded"),
            retries_budget_exhausted: retries("budget_exhausted"),
            retries_limit: retries("limit"),
            overflows: LIMITS.map(|limit| {
                self.overflows
                    .get_or_create(&OverflowLabels {
                        backend: key.to_owned(),
                        limit,
                    })
                    .clone()
            }),
            ejections: EJECTION_REASONS.map(|reason| {
                self.ejections
                    .get_or_create(&BackendReasonLabels {
                        backend: key.to_owned(),
                        reason,
                    })
                    .clone()
            }),
            ejected_endpoints: self.ejected_endpoints.get_or_create(&labels).clone(),
            panic_mode: self.panic_mode.get_or_create(&labels).clone(),
            health_pass: health("pass"),
            health_fail: health("fail"),
            hedges: HEDGE_RESULTS.map(|result| {
                self.hedges
                    .get_or_create(&BackendResultLabels {
                        backend: key.to_owned(),
                        result,
                    })
                    .clone()
            }),
        }
    }

    /// Counts one inbound refusal.
    pub(crate) fn inbound_rejected(&self, reason: &'static str) {
        self.inbound_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by direction, route, backend and status class",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, LatencyHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from request received to response headers sent",
            latency.clone(),
        );
        let active_connections = Family::<DirectionLabels, Gauge>::default();
        registry.register(
            "active_connections",
            "Downstream connections open now",
            active_connections.clone(),
        );
        let connections = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Downstream connections accepted",
            connections.clone(),
        );
        let tcp_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "tcp_bytes",
            "Bytes forwarded on opaque TCP and upgraded connections",
            tcp_bytes.clone(),
        );
        let inbound_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "inbound_rejected",
            "Inbound connections or requests refused, by reason",
            inbound_rejected.clone(),
        );
        let listener_refused = Family::<ListenerLimitLabels, Counter>::default();
        registry.register(
            "listener_refused",
            "Connections and requests a listener refused at its limits (--max-connections, --max-requests)",
            listener_refused.clone(),
        );
        let config_version = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "config_version",
            "Version of the config in force",
            config_version.clone(),
        );
        let cert_expiry = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the mesh certificate in use expires (Unix seconds; 0 without one)",
            cert_expiry.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (applied, rejected)",
            config_reloads.clone(),
        );
        let upstream_connects = Family::<ResultLabels, Counter>::default();
        registry.register(
            "upstream_connects",
            "Upstream connection attempts by result",
            upstream_connects.clone(),
        );
        let retries = Family::<BackendResultLabels, Counter>::default();
        registry.register(
            "retries",
            "Retries by result: sent, succeeded, budget_exhausted, limit",
            retries.clone(),
        );
        let hedges = Family::<BackendResultLabels, Counter>::default();
        registry.register(
            "hedges",
            "Hedged requests by result: sent, won (a hedge answered first), no-budget",
            hedges.clone(),
        );
        let overflows = Family::<OverflowLabels, Counter>::default();
        registry.register(
            "overflows",
            "Requests refused at once (503 x-weft-overloaded) by the limit they hit",
            overflows.clone(),
        );
        let ejections = Family::<BackendReasonLabels, Counter>::default();
        registry.register(
            "ejections",
            "Endpoints ejected by outlier detection, by reason: consecutive, success-rate",
            ejections.clone(),
        );
        let ejected_endpoints = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "ejected_endpoints",
            "Endpoints out of the balancer now (ejected or failing health checks)",
            ejected_endpoints.clone(),
        );
        let health_checks = Family::<BackendResultLabels, Counter>::default();
        registry.register(
            "health_checks",
            "Active health checks by backend and result (pass, fail)",
            health_checks.clone(),
        );
        let panic_mode = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "panic_mode",
            "1 while a backend is below its panic threshold and balances over all endpoints",
            panic_mode.clone(),
        );
        let limit_active = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "limit_active",
            "In use now, per backend concurrency limit (circuit breaker); refreshed at scrape",
            limit_active.clone(),
        );
        let limit_max = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "limit_max",
            "The maximum of each backend concurrency limit; at it, requests are shed",
            limit_max.clone(),
        );
        // Process metrics, read from /proc when scraped.
        let process_cpu_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let process_resident_bytes = Gauge::default();
        let process_open_fds = Gauge::default();
        let runtime_alive_tasks = Gauge::default();
        let process_start_time = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of this process (read at scrape)",
            process_cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process (read at scrape)",
            process_resident_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of this process (read at scrape)",
            process_open_fds.clone(),
        );
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive in the proxy's runtime: spawned and not yet finished (read at scrape)",
            runtime_alive_tasks.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of this process since the Unix epoch",
            process_start_time.clone(),
        );
        process_start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        );
        let tls_handshakes = Family::<TlsLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "mTLS handshakes by direction and result (ok, or why it failed: unknown_ca, wrong_identity, expired, bad_certificate, no_certificate, peer_rejected, incompatible, protocol, io, timeout)",
            tls_handshakes.clone(),
        );
        // Series that dashboards expect from the start, at zero.
        for result in ["applied", "rejected"] {
            drop(config_reloads.get_or_create(&ResultLabels { result }));
        }
        for result in ["ok", "error"] {
            drop(upstream_connects.get_or_create(&ResultLabels { result }));
        }
        for direction in ["inbound", "outbound"] {
            drop(tls_handshakes.get_or_create(&TlsLabels {
                direction,
                result: "ok",
            }));
        }
        let trace_spans_exported = Counter::default();
        let trace_spans_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "trace_spans_exported",
            "Trace spans the OTLP receiver accepted",
            trace_spans_exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Trace spans dropped: queue_full (export not keeping up, e.g. the collector is down) or export_failed",
            trace_spans_dropped.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Inbound requests refused by a local rate limit (TrafficPolicy rateLimit), by limit",
            rate_limited.clone(),
        );
        let mirrors = Family::<BackendResultLabels, Counter>::default();
        registry.register(
            "mirrors",
            "RequestMirror copies by mirror backend and result: sent (answered), failed, skipped-body, skipped-limit",
            mirrors.clone(),
        );
        let faults = Family::<BackendKindLabels, Counter>::default();
        registry.register(
            "faults",
            "Faults injected (TrafficPolicy fault) by backend and kind: abort, delay",
            faults.clone(),
        );
        Metrics {
            rate_limited,
            mirrors,
            faults,
            registry,
            tls_handshakes,
            trace_spans_exported,
            trace_spans_dropped,
            process_cpu_seconds,
            process_resident_bytes,
            process_open_fds,
            runtime_alive_tasks,
            limit_active,
            limit_max,
            retries,
            hedges,
            overflows,
            ejections,
            ejected_endpoints,
            health_checks,
            panic_mode,
            requests,
            latency,
            active_connections,
            connections,
            tcp_bytes,
            inbound_rejected,
            listener_refused,
            config_version,
            cert_expiry,
            config_reloads,
            upstream_connects,
        }
    }

    /// Resolves the handles of one route/backend pair (not on the request path).
    pub(crate) fn route(
        &self,
        direction: &'static str,
        route: &str,
        backend: &str,
    ) -> RouteMetrics {
        let by_class = CLASSES.map(|code_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    direction,
                    route: route.to_owned(),
                    backend: backend.to_owned(),
                    code_class,
                })
                .clone()
        });
        let latency = self
            .latency
            .get_or_create(&LatencyLabels {
                direction,
                route: route.to_owned(),
                backend: backend.to_owned(),
            })
            .clone();
        RouteMetrics { by_class, latency }
    }

    pub(crate) fn upstream_connect(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.upstream_connects
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn tcp_bytes_add(&self, direction: &'static str, n: u64) {
        self.tcp_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n);
    }

    /// Reads this process's CPU time, RSS and open fds from /proc (Linux),
    /// and the runtime's live task count.
    pub(crate) fn refresh_process(&self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.runtime_alive_tasks
                .set(rt.metrics().num_alive_tasks() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may contain spaces.
            if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                // utime, stime and rss are fields 14, 15 and 24 of the whole line.
                // SAFETY: sysconf only reads system constants.
                let (hz, page) = unsafe {
                    (
                        libc::sysconf(libc::_SC_CLK_TCK),
                        libc::sysconf(libc::_SC_PAGESIZE),
                    )
                };
                self.process_cpu_seconds
                    .set((ticks(11) + ticks(12)) / (hz.max(1) as f64));
                let pages = f.get(21).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                self.process_resident_bytes.set(pages * page.max(1));
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.process_open_fds.set(dir.count() as i64);
        }
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The `weft_rate_limited_total` counter of one limit (resolved once).
    pub(crate) fn rate_limited(&self, limit: &'static str) -> Counter {
        self.rate_limited
            .get_or_create(&RateLimitLabels { limit })
            .clone()
    }
}
