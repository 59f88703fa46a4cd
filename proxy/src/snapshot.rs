//! The config in force, compiled into lookup-ready form and published
//! through `ArcSwap`: a reload is one pointer swap, and each request finishes
//! on the snapshot it started with.
//!
//! Everything a request needs is resolved here once per config change
//! (by `pipeline::compile`), never per request: each name's rules in
//! precedence order, each rule's backends with their effective retry
//! policy and metric handles, inbound authorization, and the MeshConfig's
//! settings with the flags' defaults filled in.

use crate::backend::Backend;
use crate::resilience::policy::RetryPolicy;
use crate::route::{Filters, Matcher};
use crate::telemetry::metrics::{BackendResultLabels, Metrics, RouteMetrics};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_mesh::config::defaults;
use weft_mesh::config::policy::{InboundMode, MeshConfigSpec, MeshTracing};
use weft_mesh::config::ConfigSet;
use weft_mesh::names::NameTable;

/// One backend a rule may send to, with its share.
pub(crate) struct WeightedBackend {
    pub(crate) backend: Arc<Backend>,
    pub(crate) weight: u32,
    pub(crate) filters: Filters,
    pub(crate) metrics: RouteMetrics,
    /// The retry policy for this backend under this rule: the route's
    /// settings (GEP-1731) over the backend's TrafficPolicy.
    pub(crate) retry: Arc<RetryPolicy>,
    /// Each try's timeout: the shorter of the rule's `backendRequest` and
    /// the policy's `perTryTimeout`.
    pub(crate) per_try_timeout: Option<Duration>,
}

/// A rule of an HTTPRoute or GRPCRoute (or the implicit catch-all of a Backend).
pub(crate) struct Rule {
    /// `namespace/name` of the route ("" for a Backend's implicit route).
    pub(crate) route: Arc<str>,
    /// Its index among the route's rules.
    pub(crate) index: u32,
    pub(crate) filters: Filters,
    pub(crate) backends: Vec<WeightedBackend>,
    pub(crate) total_weight: u64,
    /// Whole request (until response headers), retries included.
    pub(crate) request_timeout: Option<Duration>,
    /// Metrics for answers the rule makes itself (redirects, no backend).
    pub(crate) local_metrics: RouteMetrics,
    /// Where a copy of its requests goes (`RequestMirror`).
    pub(crate) mirror: Option<Mirror>,
}

/// A rule's `RequestMirror`: the backend copies go to (never retried), and
/// the share of requests copied.
pub(crate) struct Mirror {
    pub(crate) backend: WeightedBackend,
    /// Out of 1 000 000.
    pub(crate) per_million: u32,
    /// How long a copy may take, its answer's body included.
    pub(crate) timeout: Duration,
    pub(crate) metrics: MirrorMetrics,
}

/// A mirror backend's `weft_mirrors_total` series (counted by
/// `http::mirror`), resolved when the config is compiled.
pub(crate) struct MirrorMetrics {
    pub(crate) sent: Counter,
    pub(crate) failed: Counter,
    pub(crate) skipped_body: Counter,
    pub(crate) skipped_limit: Counter,
}

impl MirrorMetrics {
    pub(crate) fn new(metrics: &Metrics, backend: &str) -> MirrorMetrics {
        let c = |result| {
            metrics
                .mirrors
                .get_or_create(&BackendResultLabels {
                    backend: backend.to_owned(),
                    result,
                })
                .clone()
        };
        MirrorMetrics {
            sent: c("sent"),
            failed: c("failed"),
            skipped_body: c("skipped-body"),
            skipped_limit: c("skipped-limit"),
        }
    }
}

/// Everything reachable under one authority.
pub(crate) struct VirtualHost {
    pub(crate) name: Arc<str>,
    /// (match, rule) in precedence order: the first that matches wins.
    pub(crate) matches: Vec<(Matcher, Arc<Rule>)>,
    /// The Backend of that name, for CONNECT and opaque TCP.
    pub(crate) backend: Option<Arc<Backend>>,
}

/// What the MeshConfig says, with the proxy's flags filling in what it
/// leaves out.
#[derive(Clone, Debug)]
pub(crate) struct MeshSettings {
    /// `accessLog.enabled`, else `--access-log`.
    pub(crate) access_log: bool,
    /// `defaultInboundMode: Strict`, else `--inbound-mode strict`:
    /// plaintext inbound connections are refused.
    pub(crate) inbound_strict: bool,
    /// Where and how much to trace, beyond what `OTEL_*` says.
    pub(crate) tracing: Option<MeshTracing>,
    /// When in its life a certificate is renewed, as fractions (`rotationPercent`).
    pub(crate) rotation_window: (f64, f64),
    /// `debugHeaders.enabled`: outbound answers say which route, backend
    /// and endpoint served them, in how many tries.
    pub(crate) debug_headers: bool,
}

impl MeshSettings {
    /// What holds with no MeshConfig: the flags (`--access-log`,
    /// `--inbound-mode`) and the defaults.
    pub(crate) fn from_flags(access_log: bool, inbound: InboundMode) -> MeshSettings {
        MeshSettings {
            access_log,
            inbound_strict: inbound == InboundMode::Strict,
            tracing: None,
            rotation_window: defaults::ROTATION_WINDOW,
            debug_headers: false,
        }
    }

    /// These settings with what a MeshConfig sets over them.
    pub(crate) fn with_mesh_config(mut self, m: &MeshConfigSpec) -> MeshSettings {
        if let Some(enabled) = m.access_log.as_ref().and_then(|a| a.enabled) {
            self.access_log = enabled;
        }
        if let Some(mode) = m.default_inbound_mode {
            self.inbound_strict = mode == InboundMode::Strict;
        }
        self.tracing = m.tracing.clone();
        self.debug_headers = m.debug_headers.as_ref().is_some_and(|d| d.enabled);
        // Validation keeps it to 1 <= low <= high <= 95.
        if let Some([lo, hi]) = m.rotation_percent.as_deref() {
            self.rotation_window = (*lo as f64 / 100.0, *hi as f64 / 100.0);
        }
        self
    }
}

pub(crate) struct Snapshot {
    pub(crate) version: u64,
    /// Every name this proxy routes, looked up on every request.
    pub(crate) names: NameTable<VirtualHost>,
    pub(crate) backends: HashMap<Arc<str>, Arc<Backend>>,
    /// Backends by static endpoint address, to classify intercepted connections.
    pub(crate) by_address: HashMap<SocketAddr, Arc<Backend>>,
    pub(crate) config: Arc<ConfigSet>,
    pub(crate) applied_at: SystemTime,
    pub(crate) mesh: MeshSettings,
    /// Inbound AuthorizationPolicy for this sidecar's service.
    pub(crate) authz: crate::authz::InboundAuthz,
    /// Local rate limits for this sidecar's service (its TrafficPolicy's
    /// `rateLimit`); checked after `authz`.
    pub(crate) rate_limit: Option<Arc<crate::resilience::rate_limit::InboundRateLimit>>,
}

impl Snapshot {
    /// What serves before any config is applied: no names, the flags' settings.
    pub(crate) fn empty(mesh: MeshSettings) -> Snapshot {
        Snapshot {
            version: 0,
            names: NameTable::empty(),
            backends: HashMap::new(),
            by_address: HashMap::new(),
            config: Arc::new(ConfigSet::default()),
            applied_at: SystemTime::now(),
            mesh,
            authz: crate::authz::InboundAuthz::default(),
            rate_limit: None,
        }
    }

    /// The virtual host for an authority (`host` or `host:port`), case-insensitively.
    pub(crate) fn host(&self, authority: &str) -> Option<&VirtualHost> {
        self.names.get(authority)
    }
}
