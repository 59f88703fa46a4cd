//! DNS discovery: resolve a name, publish its addresses as endpoints,
//! re-resolve when the answer's TTL runs out. A failed lookup keeps the
//! last good endpoints and retries with backoff.

use super::{Backend, Discovery};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use weft_mesh::config::defaults;

/// Shortest wait between lookups, whatever the TTL says (a TTL of 0 must not spin).
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait between lookups, so a long TTL still notices changes.
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Retry delay after a failed lookup, doubled up to `MAX_RETRY`.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(1);
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(30);

/// Builds the resolver: the system's (`/etc/resolv.conf`), or the given server.
pub(crate) fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("reading the system DNS config: {e}"))?,
    };
    // We re-resolve on TTL ourselves; the cache only has to bound one refresh.
    builder.options_mut().cache_size = 64;
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 2;
    // Ask for A first: an error then names the A query, not a parallel AAAA.
    builder.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4thenIpv6;
    builder
        .build()
        .map_err(|e| format!("building the DNS resolver: {e}"))
}

/// Watches the backend's DNS name until the backend is dropped.
pub(crate) fn spawn(backend: &Arc<Backend>, resolver: Arc<TokioResolver>) {
    let Discovery::Dns(spec) = &backend.discovery else {
        return;
    };
    let spec = spec.clone();
    let weak: Weak<Backend> = Arc::downgrade(backend);
    tokio::spawn(async move {
        let mut retry = FIRST_RETRY;
        loop {
            let lookup = resolver.lookup_ip(spec.name.as_str()).await;
            let Some(backend) = weak.upgrade() else {
                return;
            };
            let wait = match lookup {
                Ok(answer) => {
                    retry = FIRST_RETRY;
                    let mut addrs: Vec<SocketAddr> = answer
                        .iter()
                        .map(|ip| SocketAddr::new(ip, spec.port))
                        .collect();
                    addrs.sort();
                    addrs.dedup();
                    let left = answer
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    // Rounded up: a TTL of 3 s read a moment later is still "3".
                    let ttl =
                        Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                            .clamp(MIN_REFRESH, MAX_REFRESH);
                    let changed = {
                        let current = backend.endpoints.load();
                        current.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>() != addrs
                    };
                    if changed {
                        tracing::info!(backend = %backend.key, name = %spec.name, addresses = ?addrs, "DNS endpoints changed");
                        backend.set_endpoints(
                            addrs
                                .iter()
                                .map(|a| (*a, defaults::ENDPOINT_WEIGHT, None))
                                .collect(),
                        );
                    }
                    if let Ok(mut st) = backend.dns_status.lock() {
                        st.last_error = None;
                        st.resolved_addresses = addrs.len();
                        st.ttl_secs = ttl.as_secs();
                    }
                    ttl
                }
                Err(e) => {
                    tracing::warn!(backend = %backend.key, name = %spec.name, error = %e, "DNS lookup failed; keeping last endpoints");
                    if let Ok(mut st) = backend.dns_status.lock() {
                        st.last_error = Some(e.to_string());
                    }
                    let w = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    w
                }
            };
            drop(backend);
            tokio::time::sleep(wait).await;
        }
    });
}
