//! ExternalName Services: a DNS Backend per port, reached by the Service's
//! names, re-resolved by the sidecar on TTL like a file's `dns` Backend
//! (an externalName that is an IP address is that one static endpoint).
//!
//! An externalName that names this machine — a loopback, link-local or
//! unspecified address, `localhost` or a `*.localhost` name — is refused:
//! from inside a Pod it would reach the sidecar itself (or the app behind
//! it, past the mesh). Such a Service is left out and the reason is shown
//! on `/config`. Names that only *resolve* to such addresses are the
//! sidecar's to catch (it drops those answers, see the proxy's `dns`).

use super::app_protocol::protocol;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use std::fmt::Write;
use std::net::IpAddr;
use weft_mesh::config::Protocol;
use weft_mesh::names::SERVICE_ANNOTATION;

/// The port an ExternalName Service without ports is reached at: what a
/// client naming it without a port dials over HTTP.
const NO_PORTS_PORT: i32 = 80;

/// Why an ExternalName Service is left out, if it is.
pub(crate) fn refusal(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    let Some(raw) = spec.external_name.as_deref() else {
        return Some("type ExternalName without spec.externalName".into());
    };
    refuse_name(raw)
}

/// The externalName as a DNS Backend dials it: lower case, no final dot.
fn normalized(raw: &str) -> String {
    raw.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Why `raw` may not be a mesh destination, if it may not.
pub(crate) fn refuse_name(raw: &str) -> Option<String> {
    let name = normalized(raw);
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return local_address(ip).map(|what| {
            format!("externalName {raw:?} is {what}: it would reach the sidecar itself")
        });
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(format!(
            "externalName {raw:?} names this host (localhost): it would reach the sidecar itself"
        ));
    }
    let dns_name = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!dns_name).then(|| format!("externalName {raw:?} is not a DNS name"))
}

/// What kind of this-machine address `ip` is, if it is one: loopback
/// (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10) or
/// unspecified (0.0.0.0, ::), IPv4-mapped IPv6 forms included.
pub(crate) fn local_address(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let (loopback, link_local, unspecified) = match ip {
        IpAddr::V4(a) => (a.is_loopback(), a.is_link_local(), a.is_unspecified()),
        IpAddr::V6(a) => (
            a.is_loopback(),
            (a.segments()[0] & 0xffc0) == 0xfe80,
            a.is_unspecified(),
        ),
    };
    if loopback {
        Some("a loopback address")
    } else if link_local {
        Some("a link-local address")
    } else if unspecified {
        Some("the unspecified address")
    } else {
        None
    }
}

/// The Backend documents of an ExternalName Service: one per TCP port (the
/// default port named after the Service, as for any Service), each a DNS
/// Backend on the externalName at that port; `None` if it is refused.
pub(crate) fn backends(ns: &str, name: &str, svc: &Service) -> Option<String> {
    if refusal(svc).is_some() {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let target = normalized(spec.external_name.as_deref()?);
    let listed: Vec<&ServicePort> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| {
            p.protocol.as_deref().unwrap_or("TCP") == "TCP" && (1..=65535).contains(&p.port)
        })
        .collect();
    let fallback = ServicePort {
        port: NO_PORTS_PORT,
        ..Default::default()
    };
    let ports: Vec<&ServicePort> = if spec.ports.as_ref().is_none_or(Vec::is_empty) {
        vec![&fallback]
    } else {
        listed
    };
    let default = super::ports::default_port(&ports);
    let mut text = String::new();
    for (i, port) in ports.iter().enumerate() {
        let backend = super::ports::backend_name(name, port, i == default);
        super::ports::next_document(&mut text);
        document(&mut text, [ns, name, &backend], port, &target);
    }
    (!text.is_empty()).then_some(text)
}

/// Appends one Backend document: `[namespace, service, backend]` names.
fn document(out: &mut String, names: [&str; 3], port: &ServicePort, target: &str) {
    let [ns, service, backend] = names;
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let protocol = match protocol(port, &[]) {
        Protocol::Http => "http",
        Protocol::Http2 => "http2",
        Protocol::Grpc => "grpc",
        Protocol::Tcp => "tcp",
    };
    let _ = write!(
        out,
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: {}\n  namespace: {}\n  annotations:\n    {SERVICE_ANNOTATION}: {}\nspec:\n  protocol: {protocol}\n  port: {}\n",
        q(backend),
        q(ns),
        q(service),
        port.port,
    );
    // An address (not one of this host's, see `refuse_name`) is dialled
    // as it is; a name is resolved by the sidecar.
    let bare = target.trim_start_matches('[').trim_end_matches(']');
    // Ports were kept to 1..=65535 above.
    let number = u16::try_from(port.port).unwrap_or_default();
    let _ = match bare.parse::<IpAddr>() {
        Ok(ip) => writeln!(
            out,
            "  endpoints:\n    - address: {}",
            q(&std::net::SocketAddr::new(ip, number).to_string())
        ),
        Err(_) => writeln!(
            out,
            "  dns:\n    name: {}\n    port: {}",
            q(target),
            port.port
        ),
    };
}
