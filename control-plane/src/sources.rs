//! Where resources come from: files (`--config`, watched) and Kubernetes
//! (`--kubernetes`, see `kubernetes/`). Each source hands over resource
//! text; the last accepted text of every source is combined
//! (`resources::Inputs`), loaded and validated as one set, and published
//! as [`Resources`]: every proxy's watch sees the change.

use crate::resources::{Generated, Resources};
use crate::state::ControlPlane;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::config::files::FileWatch;
use weft_mesh::process::lock;

/// Changes settle this long before they are pushed (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches the files; validated changes replace the resources (after a
/// short debounce), rejected ones are logged and shown on `/config`.
pub(crate) async fn watch_files(cp: Arc<ControlPlane>, paths: Vec<PathBuf>) {
    let mut files = FileWatch::new(&paths);
    loop {
        files.changed().await;
        tokio::time::sleep(DEBOUNCE).await;
        files.rebase();
        let mut inputs = lock(&cp.inputs);
        let outcome = inputs.load_files(&paths).and_then(|()| inputs.resources());
        match outcome {
            Ok(r) => {
                *lock(&cp.last_error) = None;
                publish(&cp, r);
            }
            Err(e) => {
                tracing::error!(error = %e, "config rejected; proxies keep the previous version");
                cp.counters.rejected_reloads.fetch_add(1, Ordering::Relaxed);
                *lock(&cp.last_error) = Some(e);
            }
        }
    }
}

/// Takes the cluster's Backends as they now are.
pub(crate) fn set_kubernetes(cp: &ControlPlane, docs: Vec<Generated>) {
    let mut inputs = lock(&cp.inputs);
    inputs.set_kubernetes(docs);
    match inputs.resources() {
        Ok(r) => publish(cp, r),
        Err(e) => {
            tracing::error!(error = %e, "resources from Kubernetes rejected; proxies keep the previous version");
            cp.counters.rejected_reloads.fetch_add(1, Ordering::Relaxed);
            *lock(&cp.last_error) = Some(e);
        }
    }
}

/// Makes `r` the resources in force, when it changes anything.
fn publish(cp: &ControlPlane, r: Resources) {
    if r.version == cp.resources.borrow().version {
        return;
    }
    tracing::info!(version = %r.version, services = r.services, "resources changed; pushing to proxies");
    drop(cp.resources.send_replace(Arc::new(r)));
    // The previous version's parse trees and name tables are freed once
    // every watch has moved on; hand the freed pages back to the system
    // then, or RSS keeps the high-water mark of every edit.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        release_free_memory();
    });
}

/// Returns free heap pages to the system (glibc keeps them otherwise).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
