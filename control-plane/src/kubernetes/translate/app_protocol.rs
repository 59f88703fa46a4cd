//! Which protocol the proxy speaks to a Service port, from its
//! `appProtocol` (shared by ordinary and ExternalName Services).

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use weft_mesh::config::Protocol;

/// `appProtocol` of the Service port (or, failing that, of the slices'
/// port of that name): `http`, `kubernetes.io/h2c`, `grpc`, `tcp`, and
/// WebSocket as HTTP; any other value names a protocol the proxy does not
/// speak (`https`, `mysql`, …), so its bytes are passed on untouched. No
/// `appProtocol` at all means HTTP, the default of a file's Backend.
pub(crate) fn protocol(port: &ServicePort, slices: &[&EndpointSlice]) -> Protocol {
    let declared = port.app_protocol.clone().or_else(|| {
        slices
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .find(|p| p.name == port.name && p.app_protocol.is_some())
            .and_then(|p| p.app_protocol.clone())
    });
    match declared.as_deref() {
        None => Protocol::Http,
        Some(p) => match p.to_ascii_lowercase().as_str() {
            "http" | "kubernetes.io/ws" => Protocol::Http,
            "kubernetes.io/h2c" | "h2c" | "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            _ => Protocol::Tcp,
        },
    }
}
