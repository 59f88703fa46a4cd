//! DNS discovery: resolve a name, publish its addresses as endpoints,
//! re-resolve when the answer's TTL runs out. A failed lookup keeps the
//! last good endpoints and retries with backoff.
//!
//! A Backend made from a Kubernetes Service (an ExternalName one: the
//! `weft.dev/service` annotation) drops answers that are this host's own
//! addresses — loopback, link-local, unspecified — with a warning: from a
//! sidecar they would reach the sidecar itself or the app past the mesh,
//! so a name pointed at them is no way round the control plane's refusal
//! of such externalNames. A file's DNS Backend is left as written (a
//! name resolving to 127.0.0.1 is a normal thing on a laptop).

use super::{Backend, Discovery};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
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
        // The answers last dropped: logged when they change, not on every refresh.
        let mut last_dropped: Vec<IpAddr> = Vec::new();
        loop {
            let lookup = resolver.lookup_ip(spec.name.as_str()).await;
            let Some(backend) = weak.upgrade() else {
                return;
            };
            let wait = match lookup {
                Ok(answer) => {
                    retry = FIRST_RETRY;
                    let (kept, dropped) = usable(answer.iter(), backend.from_service);
                    if !dropped.is_empty() && dropped != last_dropped {
                        tracing::warn!(backend = %backend.key, name = %spec.name, dropped = ?dropped, "DNS answers that are this host's own addresses (loopback, link-local) are not endpoints of a Service's Backend");
                    }
                    last_dropped = dropped;
                    let mut addrs: Vec<SocketAddr> = kept
                        .into_iter()
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

/// The answers to keep as endpoints and those dropped: with `refuse_local`,
/// this host's own addresses are dropped.
fn usable(answer: impl Iterator<Item = IpAddr>, refuse_local: bool) -> (Vec<IpAddr>, Vec<IpAddr>) {
    answer.partition(|ip| !(refuse_local && is_local(*ip)))
}

/// Loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10) or
/// unspecified, IPv4-mapped IPv6 forms included.
fn is_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_backend_drops_this_hosts_addresses() {
        let ips: Vec<IpAddr> = [
            "127.0.0.1",
            "127.3.2.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "10.0.0.5",
            "fd00::5",
            "fec0::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let (kept, dropped) = usable(ips.iter().copied(), true);
        let kept: Vec<String> = kept.iter().map(ToString::to_string).collect();
        assert_eq!(kept, ["10.0.0.5", "fd00::5", "fec0::1"]);
        assert_eq!(dropped.len(), 7);
        let (kept, dropped) = usable(ips.iter().copied(), false);
        assert_eq!(
            (kept.len(), dropped.len()),
            (10, 0),
            "a file's Backend keeps all"
        );
    }
}
