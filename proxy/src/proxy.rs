//! The state every connection shares: the snapshot in force, metrics, the
//! local app, and settings fixed at start.

use crate::backend::Endpoint;
use crate::snapshot::{MeshSettings, Snapshot};
use crate::telemetry::failures::Failures;
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::telemetry::trace::{Env as TraceEnv, Tracing};
use crate::tls::mesh::MeshTls;
use crate::transport::PoolSettings;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings fixed for the life of the process (from flags).
#[derive(Clone, Debug)]
pub(crate) struct ProxyOptions {
    pub(crate) namespace: String,
    pub(crate) service: Option<String>,
    pub(crate) app: SocketAddr,
    /// A client must send a whole request head within this time (slowloris guard).
    pub(crate) header_read_timeout: Duration,
    /// Largest request head accepted; larger gets 431.
    pub(crate) max_header_bytes: usize,
    /// How long to wait for a client's first bytes before treating the
    /// connection as opaque TCP (server-speaks-first protocols).
    pub(crate) detect_timeout: Duration,
    /// Most connections each listener holds at once.
    pub(crate) max_connections: u32,
    /// Most requests in flight on each listener.
    pub(crate) max_requests: u32,
    /// How slowly a request body may come.
    pub(crate) body_pace: crate::body::pace::Pace,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// `--access-log`: the access log's state when no MeshConfig sets it.
    pub(crate) access_log: bool,
    /// `--inbound-mode`: the inbound mode when no MeshConfig sets it.
    pub(crate) inbound_mode: weft_mesh::config::policy::InboundMode,
    /// `--failures-kept`: how many failed requests `/failures` keeps (0: off).
    pub(crate) failures_kept: usize,
}

/// Asks about a name the config in force does not have (mesh mode: the
/// control plane's scoped config holds only names asked for so far).
pub(crate) trait NameLookup: Send + Sync {
    /// True once answered (the snapshot in force then has the name, if it
    /// exists); false at once when it cannot be asked.
    fn discover<'a>(
        &'a self,
        authority: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;
}

/// Result of the last reload, for `/config` and `/ready`.
#[derive(Default)]
pub(crate) struct ConfigStatus {
    pub(crate) source: String,
    pub(crate) last_error: Option<String>,
    pub(crate) rejected: u64,
}

/// Shared by every connection and task.
pub(crate) struct Proxy {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) opts: ProxyOptions,
    pub(crate) app: Arc<Endpoint>,
    pub(crate) app_settings: PoolSettings,
    pub(crate) passthrough_settings: PoolSettings,
    /// Endpoints for intercepted traffic to destinations we have no config for.
    passthrough: ArcSwap<HashMap<SocketAddr, Arc<Endpoint>>>,
    pub(crate) status: Mutex<ConfigStatus>,
    pub(crate) inbound_metrics: RouteMetrics,
    pub(crate) no_route_metrics: RouteMetrics,
    pub(crate) passthrough_metrics: RouteMetrics,
    /// The snapshot's `access_log`, mirrored for a relaxed load per request.
    pub(crate) access_log: AtomicBool,
    /// The snapshot's `debug_headers`, mirrored likewise.
    pub(crate) debug_headers: AtomicBool,
    /// The last failed or degraded requests, for `/failures`.
    pub(crate) failures: Failures,
    /// This workload's mesh identity (`--identity-dir`, or issued by the
    /// control plane and swapped on rotation): with it, inbound TLS is
    /// terminated (mTLS) and endpoints naming an identity are dialled over
    /// mTLS. Without it everything is plaintext.
    pub(crate) mesh: ArcSwapOption<MeshTls>,
    /// Config and identity come from a control plane (`--control-plane`).
    pub(crate) mesh_mode: bool,
    /// Mesh mode: asked about names the app calls that the scoped config
    /// does not have.
    pub(crate) lookups: Option<Arc<dyn NameLookup>>,
    /// OpenTelemetry traces (off unless an OTLP endpoint is configured).
    pub(crate) tracing: Tracing,
}

impl Proxy {
    pub(crate) fn new(opts: ProxyOptions, metrics: Arc<Metrics>, source: String) -> Proxy {
        let settings = PoolSettings {
            connect_timeout: opts.connect_timeout,
            idle_timeout: opts.pool_idle_timeout,
            max_idle: weft_mesh::config::defaults::POOL_MAX_IDLE_PER_ENDPOINT as usize,
        };
        Proxy {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(MeshSettings::from_flags(
                opts.access_log,
                opts.inbound_mode,
            ))),
            app: Arc::new(Endpoint::new(opts.app)),
            app_settings: settings.clone(),
            passthrough_settings: settings,
            passthrough: ArcSwap::from_pointee(HashMap::new()),
            status: Mutex::new(ConfigStatus {
                source,
                ..Default::default()
            }),
            inbound_metrics: metrics.route("inbound", "", "app"),
            no_route_metrics: metrics.route("outbound", "", ""),
            passthrough_metrics: metrics.route("outbound", "passthrough", ""),
            access_log: AtomicBool::new(opts.access_log),
            debug_headers: AtomicBool::new(false),
            failures: Failures::new(opts.failures_kept),
            mesh: ArcSwapOption::empty(),
            mesh_mode: false,
            lookups: None,
            tracing: Tracing::new(
                TraceEnv::default(),
                String::new(),
                opts.service.clone().unwrap_or_else(|| "weft-proxy".into()),
                opts.namespace.clone(),
                metrics.trace_stats(),
            ),
            metrics,
            opts,
        }
    }

    /// The endpoint for an intercepted destination we have no Backend for.
    /// Rare (unconfigured destinations), so a copy-on-write map is fine.
    pub(crate) fn passthrough_endpoint(&self, addr: SocketAddr) -> Arc<Endpoint> {
        if let Some(ep) = self.passthrough.load().get(&addr) {
            return ep.clone();
        }
        let ep = Arc::new(Endpoint::new(addr));
        self.passthrough.rcu(|m| {
            let mut m = HashMap::clone(m);
            // Bound the map: destinations come from what the app dials.
            if m.len() >= 4096 {
                m.clear();
            }
            m.entry(addr).or_insert_with(|| ep.clone());
            m
        });
        ep
    }

    /// Traces as the environment (`OTEL_*`, read by the caller) configures
    /// them; a MeshConfig can add to that.
    /// `instance`: this sidecar's name (`service.instance.id`).
    pub(crate) fn with_trace_env(mut self, env: TraceEnv, instance: String) -> Proxy {
        self.tracing = Tracing::new(
            env,
            instance,
            self.opts
                .service
                .clone()
                .unwrap_or_else(|| "weft-proxy".into()),
            self.opts.namespace.clone(),
            self.metrics.trace_stats(),
        );
        self
    }

    /// Gives the proxy its mesh identity (before it serves).
    pub(crate) fn with_mesh(mut self, mesh: Option<Arc<MeshTls>>, mesh_mode: bool) -> Proxy {
        self.mesh = ArcSwapOption::new(mesh);
        self.mesh_mode = mesh_mode;
        self
    }

    /// Mesh mode: unknown names are asked about here.
    pub(crate) fn with_lookups(mut self, lookups: Option<Arc<dyn NameLookup>>) -> Proxy {
        self.lookups = lookups;
        self
    }

    /// Closes idle upstream connections past their idle timeout.
    pub(crate) fn evict_idle(&self) {
        let snap = self.snapshot.load();
        for b in snap.backends.values() {
            for e in b.endpoints.load().endpoints.iter() {
                e.pool.evict_idle(b.settings.idle_timeout);
            }
        }
        self.app.pool.evict_idle(self.app_settings.idle_timeout);
        for e in self.passthrough.load().values() {
            e.pool.evict_idle(self.passthrough_settings.idle_timeout);
        }
    }
}
