//! Services and their EndpointSlices, as the Backends the file loader
//! reads: the cluster is turned into the same resource model (YAML text,
//! validated by the same loader) so everything downstream — the name
//! table, scoping, versions, the proxy — is shared with file mode.
//!
//! One Backend per Service port. The Service's default port (80 when it
//! has one, else its first) is the Backend named after the Service and so
//! answers the names without a port too; each other port is a Backend
//! `<service>.<port>` (no Service name has a dot, so it cannot collide),
//! reached only as `<service>…:<port>`. Both carry the `weft.dev/service`
//! annotation the name table reads, and the Service's cluster IPs
//! (`weft.dev/cluster-ips`) so `ClusterIP:port` is a name too; a headless
//! Service has none and is reached by name only. An ExternalName Service
//! is a DNS Backend on its externalName (see [`external_name`]).
//!
//! Endpoints are the EndpointSlice endpoints that are ready; only while
//! none is, the serving ones that are terminating (as kube-proxy does). The
//! port is the slice's port of the same name as the Service port, which
//! the EndpointSlice controller has already resolved from a named
//! `targetPort`. An endpoint whose Pod is meshed carries the identity it
//! must present (see [`super::pods`]); the others are plaintext. The output
//! is sorted and deduplicated, so the same cluster
//! gives the same text (and version) on every replica and every relist.

mod app_protocol;
mod external_name;
mod ports;

use super::pods::Pods;
use crate::resources::Generated;
use app_protocol::protocol;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use weft_mesh::config::Protocol;
use weft_mesh::names::{CLUSTER_IPS_ANNOTATION, SERVICE_ANNOTATION};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the endpoints' identities are taken from.
pub(crate) struct Identities<'a> {
    pub(crate) trust_domain: &'a str,
    pub(crate) pods: Pods<'a>,
}

/// The Backends of every Service, one [`Generated`] per Service, sorted by
/// namespace and name.
pub(crate) fn backends(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    ids: &Identities<'_>,
) -> Vec<Generated> {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc)).or_default().push(s);
        }
    }
    let mut out: Vec<Generated> = services
        .iter()
        .filter_map(|svc| {
            let ns = svc.metadata.namespace.as_deref()?;
            let name = svc.metadata.name.as_deref()?;
            let slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let text = service_backends(ns, name, svc, slices, ids)?;
            Some(Generated {
                service: format!("{ns}/{name}"),
                text,
            })
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

/// The Services left out, each `(namespace/name, why)`, sorted: the
/// ExternalName Services whose externalName would reach the sidecar itself.
pub(crate) fn refused(services: &[Arc<Service>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = services
        .iter()
        .filter_map(|svc| {
            let reason = external_name::refusal(svc)?;
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            Some((format!("{ns}/{name}"), reason))
        })
        .collect();
    out.sort();
    out
}

/// The Backend documents of one Service; `None` when it has none (no TCP
/// port, or a refused ExternalName Service).
fn service_backends(
    ns: &str,
    name: &str,
    svc: &Service,
    slices: &[&EndpointSlice],
    ids: &Identities<'_>,
) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    // A DNS alias: a DNS Backend per port, or nothing if it is refused.
    if spec.type_.as_deref() == Some("ExternalName") {
        return external_name::backends(ns, name, svc);
    }
    let ports: Vec<&ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| {
            p.protocol.as_deref().unwrap_or("TCP") == "TCP" && (1..=65535).contains(&p.port)
        })
        .collect();
    let default = ports::default_port(&ports);
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) => ips.iter().map(String::as_str).collect(),
        None => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    let cluster_ips: Vec<&str> = cluster_ips
        .into_iter()
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .collect();
    let cluster_ips = cluster_ips.join(",");
    let mut text = String::new();
    for (i, port) in ports.iter().enumerate() {
        let backend = ports::backend_name(name, port, i == default);
        ports::next_document(&mut text);
        let d = Doc {
            ns,
            service: name,
            backend: &backend,
            cluster_ips: &cluster_ips,
        };
        document(&mut text, &d, port, slices, ids);
    }
    (!text.is_empty()).then_some(text)
}

/// The names one Backend document carries.
struct Doc<'a> {
    ns: &'a str,
    service: &'a str,
    backend: &'a str,
    cluster_ips: &'a str,
}

/// Appends one Backend document for `port`.
fn document(
    out: &mut String,
    d: &Doc<'_>,
    port: &ServicePort,
    slices: &[&EndpointSlice],
    ids: &Identities<'_>,
) {
    let Doc {
        ns,
        service,
        backend,
        cluster_ips,
    } = *d;
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let protocol = match protocol(port, slices) {
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    };
    let _ = write!(
        out,
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: {}\n  namespace: {}\n  annotations:\n    {SERVICE_ANNOTATION}: {}\n",
        q(backend),
        q(ns),
        q(service),
    );
    if !cluster_ips.is_empty() {
        let _ = writeln!(out, "    {CLUSTER_IPS_ANNOTATION}: {}", q(cluster_ips));
    }
    let _ = write!(
        out,
        "spec:\n  protocol: {protocol}\n  port: {}\n",
        port.port
    );
    let endpoints = endpoints(port, slices, ids);
    if endpoints.is_empty() {
        out.push_str("  endpoints: []\n");
    } else {
        out.push_str("  endpoints:\n");
        for (address, identity) in endpoints {
            let _ = writeln!(out, "    - address: {}", q(&address));
            if let Some(id) = identity {
                let _ = writeln!(out, "      identity: {}", q(&id));
            }
        }
    }
}

/// The `ip:port` addresses `port` is served at, each with the identity it
/// must present when meshed: ready endpoints, or the serving terminating
/// ones while none is ready. An address in two slices (an endpoint moving
/// between them) counts once, with an identity if either gives one (the
/// larger if they differ, so store order never shows).
fn endpoints(
    port: &ServicePort,
    slices: &[&EndpointSlice],
    ids: &Identities<'_>,
) -> BTreeMap<String, Option<String>> {
    let mut ready = BTreeMap::new();
    let mut terminating = BTreeMap::new();
    for slice in slices {
        let v6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => continue, // FQDN slices are not endpoints the mesh can dial
        };
        let Some(number) = target_port(port, slice) else {
            continue;
        };
        for e in slice.endpoints.iter().flatten() {
            // Clients may use only the first address; the rest are fungible.
            let Some(ip) = e.addresses.first() else {
                continue;
            };
            let address = if v6 {
                format!("[{ip}]:{number}")
            } else {
                format!("{ip}:{number}")
            };
            let into = match state(e) {
                State::Ready => &mut ready,
                State::ServingTerminating => &mut terminating,
                State::Out => continue,
            };
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            let identity = ids.pods.identity(ids.trust_domain, ns, e);
            let held: &mut Option<String> = into.entry(address).or_default();
            *held = held.take().max(identity);
        }
    }
    if ready.is_empty() {
        terminating
    } else {
        ready
    }
}

/// The port number `slice` serves the Service port at: its port of the
/// same name (resolved by the EndpointSlice controller, named target ports
/// included), or a numeric `targetPort` when the slice leaves the number
/// out.
fn target_port(port: &ServicePort, slice: &EndpointSlice) -> Option<u16> {
    let p = slice.ports.iter().flatten().find(|p| {
        p.name.as_deref().unwrap_or_default() == port.name.as_deref().unwrap_or_default()
    })?;
    let n = match p.port {
        Some(n) => n,
        None => match &port.target_port {
            Some(IntOrString::Int(n)) => *n,
            None => port.port,
            Some(IntOrString::String(_)) => return None,
        },
    };
    u16::try_from(n).ok().filter(|&n| n != 0)
}

enum State {
    Ready,
    ServingTerminating,
    Out,
}

/// An endpoint's conditions as the API defines their absence: `ready` and
/// `serving` unset mean ready, `terminating` unset means not terminating.
fn state(e: &Endpoint) -> State {
    let c = e.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    if ready && !terminating {
        State::Ready
    } else if serving && terminating {
        State::ServingTerminating
    } else {
        State::Out
    }
}

#[cfg(test)]
mod tests;
