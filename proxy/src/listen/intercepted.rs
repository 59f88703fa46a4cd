//! Where intercepted connections go by their original destination.
//!
//! An app's connection redirected to the outbound listener still says where
//! it was going (`SO_ORIGINAL_DST`). When that address is a Service's
//! ClusterIP and port, the Service decides: opaque TCP goes to one of its
//! endpoints (over mTLS to a meshed one), and HTTP requests follow its
//! routes whatever their Host header says (Gateway API's mesh ClusterIP
//! matching; see `http::outbound`). The address is looked up as the name
//! `IP:port`, exactly (another port of the same IP is another Service, or
//! none); a sidecar whose scoped config lacks it asks the control plane
//! once, as it does for names, and the first connection waits for the
//! answer (bounded). An address that is no Service stays passthrough.

use crate::backend::Backend;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_mesh::config::Protocol;

/// `dst` as a name, after asking the control plane about it if the config
/// in force does not know it (once per address for the proxy's life: the
/// answer, positive or not, stays in the scoped config the control plane
/// keeps sending).
pub(crate) async fn learn(proxy: &Proxy, dst: SocketAddr) -> Box<str> {
    let name = weft_mesh::names::address_name(dst);
    if proxy.snapshot.load().names.get_exact(&name).is_none() {
        if let Some(lookups) = &proxy.lookups {
            lookups.discover(&name).await;
        }
    }
    name.into_boxed_str()
}

/// The Backend an intercepted connection goes to without sniffing: the
/// opaque-TCP Service port at `name`, or the `protocol: tcp` Backend with a
/// static endpoint at `dst`.
pub(crate) fn tcp_backend(snap: &Snapshot, dst: SocketAddr, name: &str) -> Option<Arc<Backend>> {
    let tcp = |b: &&Arc<Backend>| b.protocol == Protocol::Tcp;
    snap.names
        .get_exact(name)
        .and_then(|vh| vh.backend.as_ref())
        .filter(tcp)
        .or_else(|| snap.by_address.get(&dst).filter(tcp))
        .cloned()
}

/// The Backend of the Service at `name`, whatever its protocol (for
/// traffic that turned out not to be HTTP).
pub(crate) fn service_backend(snap: &Snapshot, name: &str) -> Option<Arc<Backend>> {
    snap.names.get_exact(name).and_then(|vh| vh.backend.clone())
}
