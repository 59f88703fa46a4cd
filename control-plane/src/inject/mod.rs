//! The sidecar injector (`serve --kubernetes --webhook ADDR`): a mutating
//! admission webhook the API server calls for every Pod created where
//! injection is enabled, answering with a JSON Patch that adds the
//! interception init container, the proxy as a native sidecar, its
//! projected token and environment, and rewrites the app's HTTP probes.
//!
//! [`patch`] decides and builds the patch (pure, golden-tested),
//! [`probes`] rewrites probes, [`webhook`] serves AdmissionReviews over
//! HTTPS with a certificate from the mesh CA ([`serving_cert`]), and
//! [`ca_bundle`] keeps the webhook configuration's `caBundle` equal to the
//! mesh CA root. Which Pods are sent here is the configuration's business
//! (namespace and object selectors, see the README); the webhook still
//! skips opted-out, host-network and already injected Pods.

mod ca_bundle;
mod patch;
mod probes;
mod quantity;
mod serving_cert;
mod settings;
mod webhook;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod pod_spec_tests;
#[cfg(test)]
mod webhook_tests;

pub(crate) use settings::{InjectorArgs, Settings};
use std::time::Duration;

/// Starts the injector on `listener`: the webhook (its certificate from
/// the mesh CA, renewed) and the caBundle keeper.
pub(crate) fn start(
    settings: Settings,
    listener: tokio::net::TcpListener,
    cp: std::sync::Arc<crate::state::ControlPlane>,
    cluster: &crate::kubernetes::Source,
    interval: Duration,
) -> Result<(), String> {
    use std::sync::Arc;
    let acceptor = serving_cert::acceptor(&cp.ca, &cluster.namespace, cp.cert_ttl)?;
    let slot = Arc::new(arc_swap::ArcSwap::from_pointee(acceptor));
    tokio::spawn(serving_cert::renew(
        slot.clone(),
        cp.clone(),
        cluster.namespace.clone(),
        cp.cert_ttl,
    ));
    tokio::spawn(ca_bundle::keep(
        cluster.client.clone(),
        cp.ca.cert_pem().to_string(),
        interval,
        cluster.status.clone(),
    ));
    let counters = CountersOf(cp);
    tokio::spawn(webhook::serve(listener, slot, Arc::new(settings), counters));
    Ok(())
}

/// The control plane's counters, shared with the webhook's tasks.
#[derive(Clone)]
struct CountersOf(std::sync::Arc<crate::state::ControlPlane>);

impl std::ops::Deref for CountersOf {
    type Target = crate::state::Counters;
    fn deref(&self) -> &crate::state::Counters {
        &self.0.counters
    }
}
