//! The one way config changes: resources from a source → compile →
//! snapshot → apply.
//!
//! Every source (the config files, the control plane's watch, and any
//! later one) hands [`Pipeline::apply`] what it loaded, labelled with where
//! it came from. In one place, under one lock: the checks that depend on
//! this proxy's identity, the compile against the snapshot in force, the
//! swap, what the new snapshot's MeshConfig turns on (access log, traces),
//! the per-backend tasks a new Backend needs (DNS watch, health checks; a
//! dropped Backend's tasks end by themselves), and the accounting an
//! operator sees (`/config`, `weft_config_*` metrics, the log). A change
//! that fails anywhere changes nothing: the config in force keeps serving.

pub(crate) mod compile;

use crate::backend::Backend;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::ResultLabels;
use hickory_resolver::TokioResolver;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use weft_mesh::config::{ConfigErrors, ConfigSet};
use weft_mesh::process::lock;

/// Applies config to a proxy; shared by every source.
pub(crate) struct Pipeline {
    proxy: Arc<Proxy>,
    /// For `Backend.spec.dns` (none when the system resolver is unusable).
    resolver: Option<Arc<TokioResolver>>,
    /// One change at a time, each compiled against the snapshot it replaces.
    applying: Mutex<()>,
}

impl Pipeline {
    pub(crate) fn new(proxy: Arc<Proxy>, resolver: Option<Arc<TokioResolver>>) -> Pipeline {
        Pipeline {
            proxy,
            resolver,
            applying: Mutex::new(()),
        }
    }

    /// The proxy this pipeline feeds.
    pub(crate) fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The config a proxy starts with (file mode): applied like any change,
    /// but not counted as a reload; on error the caller refuses to start.
    pub(crate) fn start(
        &self,
        source: &str,
        loaded: Result<ConfigSet, ConfigErrors>,
    ) -> Result<u64, ConfigErrors> {
        let version = self.swap(loaded)?;
        tracing::info!(version, source, "config applied");
        lock(&self.proxy.status).source = source.to_owned();
        Ok(version)
    }

    /// A change from `source` (a file edit, a control-plane snapshot):
    /// applied, or rejected with its errors logged, counted and shown on
    /// `/config` while the previous config keeps serving.
    pub(crate) fn apply(
        &self,
        source: &str,
        loaded: Result<ConfigSet, ConfigErrors>,
    ) -> Result<u64, ConfigErrors> {
        let result = self.swap(loaded);
        let label = match result {
            Ok(_) => "applied",
            Err(_) => "rejected",
        };
        self.proxy
            .metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: label })
            .inc();
        let mut status = lock(&self.proxy.status);
        match &result {
            Ok(version) => {
                tracing::info!(version, source, "config applied");
                status.source = source.to_owned();
                status.last_error = None;
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(source, error = %e, "config rejected; the previous config keeps serving");
                }
                status.last_error = Some(errors.to_string());
                status.rejected += 1;
            }
        }
        result
    }

    fn swap(&self, loaded: Result<ConfigSet, ConfigErrors>) -> Result<u64, ConfigErrors> {
        let set = loaded?;
        let _one_at_a_time = lock(&self.applying);
        self.check(&set)?;
        let proxy = &self.proxy;
        let prev = proxy.snapshot.load_full();
        let version = prev.version + 1;
        let snap = Arc::new(compile::compile(
            set,
            version,
            &proxy.opts,
            &proxy.metrics,
            Some(&prev),
        ));
        proxy.snapshot.store(snap.clone());
        proxy
            .access_log
            .store(snap.mesh.access_log, Ordering::Relaxed);
        proxy
            .debug_headers
            .store(snap.mesh.debug_headers, Ordering::Relaxed);
        proxy.tracing.configure(snap.mesh.tracing.as_ref());
        proxy.metrics.config_version.set(version as i64);
        self.start_tasks(&snap, &prev);
        Ok(version)
    }

    /// Refuses what would cut this proxy off, like any invalid config.
    fn check(&self, set: &ConfigSet) -> Result<(), ConfigErrors> {
        let proxy = &self.proxy;
        let mesh = proxy.mesh.load();
        // Strict inbound mode without an identity would close every
        // inbound connection.
        if mesh.is_none() && !proxy.mesh_mode {
            if let Some(m) = set.mesh_configs.iter().find(|m| {
                m.spec.default_inbound_mode == Some(weft_mesh::config::policy::InboundMode::Strict)
            }) {
                return Err(ConfigErrors(vec![m.origin.error(
                    "spec.defaultInboundMode",
                    "Strict needs this proxy to have a mesh identity (--identity-dir); without one every inbound connection would be refused",
                )]));
            }
        }
        // A trust domain other than the one this proxy's identity is in
        // would make every peer unverifiable.
        if let Some(mesh) = mesh.as_ref() {
            let ours = mesh.id.trust_domain();
            if let Some(m) = set
                .mesh_configs
                .iter()
                .find(|m| m.spec.trust_domain.as_deref().is_some_and(|t| t != ours))
            {
                return Err(ConfigErrors(vec![m.origin.error(
                    "spec.trustDomain",
                    format!(
                        "this proxy's identity is in trust domain {ours}; a different one would make every peer unverifiable (rotate the mesh CA first)"
                    ),
                )]));
            }
        }
        Ok(())
    }

    /// Starts the background work of each Backend that `prev` did not have
    /// (DNS watches, health checks). Each task holds its Backend weakly and
    /// ends when a later change drops it.
    fn start_tasks(&self, snap: &Snapshot, prev: &Snapshot) {
        for b in snap.backends.values() {
            let kept = prev
                .backends
                .get(&b.key)
                .is_some_and(|old| Arc::ptr_eq(old, b));
            if !kept {
                self.start_backend(b);
            }
        }
    }

    fn start_backend(&self, b: &Arc<Backend>) {
        if let Some(resolver) = &self.resolver {
            crate::backend::dns::spawn(b, resolver.clone());
        }
        crate::backend::health_check::spawn(b);
        crate::backend::sweep::spawn(b);
    }
}
