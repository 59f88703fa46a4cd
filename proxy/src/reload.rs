//! Hot reload in file mode: watch the config paths, and on a change load,
//! validate and compile the new config, then swap it in. A rejected change
//! is logged with its positions, shown on `/config`, counted, and the
//! config in force keeps serving.

use crate::proxy::Proxy;
use crate::snapshot::{CompileContext, Snapshot};
use std::path::PathBuf;
use std::sync::Arc;
use weft_mesh::config::files::FileWatch;
use weft_mesh::config::{self, ConfigErrors};

/// Loads and applies the config under `paths`; on error nothing changes.
pub fn apply(proxy: &Proxy, paths: &[PathBuf]) -> Result<u64, ConfigErrors> {
    apply_set(proxy, config::load_paths(paths)?)
}

/// Compiles and swaps in a loaded config; on error nothing changes.
pub fn apply_set(proxy: &Proxy, set: config::ConfigSet) -> Result<u64, ConfigErrors> {
    // Strict inbound mode without an identity would close every inbound
    // connection: refuse it like any invalid config, at startup and on reload.
    if proxy.mesh.load().is_none() && !proxy.mesh_mode {
        if let Some(m) = set
            .mesh_configs
            .iter()
            .find(|m| m.spec.default_inbound_mode == Some(config::policy::InboundMode::Strict))
        {
            return Err(ConfigErrors(vec![m.origin.error(
                "spec.defaultInboundMode",
                "Strict needs this proxy to have a mesh identity (--identity-dir); without one every inbound connection would be refused",
            )]));
        }
    }
    // A trust domain other than the one this proxy's identity is in would
    // make every peer unverifiable: refuse it rather than cut the mesh.
    if let Some(mesh) = proxy.mesh.load().as_ref() {
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
    let prev = proxy.snapshot.load_full();
    let version = prev.version + 1;
    let snap = Snapshot::compile(
        set,
        version,
        &CompileContext {
            namespace: &proxy.opts.namespace,
            metrics: &proxy.metrics,
            previous: Some(&prev),
            pool_idle_timeout: proxy.opts.pool_idle_timeout,
            access_log: proxy.opts.access_log,
            service: proxy.opts.service.as_deref(),
            inbound_mode: proxy.opts.inbound_mode,
        },
    );
    let snap = Arc::new(snap);
    proxy.snapshot.store(snap.clone());
    proxy
        .access_log
        .store(snap.access_log, std::sync::atomic::Ordering::Relaxed);
    proxy.tracing.configure(snap.tracing());
    proxy.metrics.config_version.set(version as i64);
    Ok(version)
}

/// Watches the files, applying each change.
pub async fn watch(
    proxy: Arc<Proxy>,
    mut files: FileWatch,
    on_apply: impl Fn(&Arc<Snapshot>) + Send + 'static,
) {
    loop {
        files.changed().await;
        match apply(&proxy, files.paths()) {
            Ok(version) => {
                tracing::info!(version, "config reloaded");
                proxy
                    .metrics
                    .config_reloads
                    .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "applied" })
                    .inc();
                if let Ok(mut st) = proxy.status.lock() {
                    st.last_error = None;
                }
                on_apply(&proxy.snapshot.load_full());
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "config rejected; the previous config keeps serving");
                }
                proxy
                    .metrics
                    .config_reloads
                    .get_or_create(&crate::telemetry::metrics::ResultLabels { result: "rejected" })
                    .inc();
                if let Ok(mut st) = proxy.status.lock() {
                    st.last_error = Some(errors.to_string());
                    st.rejected += 1;
                }
            }
        }
    }
}
