//! How a Service's ports become Backends, shared by ordinary and
//! ExternalName Services: one Backend per port, the default port's named
//! after the Service (so it answers the names without a port), each other
//! `<service>.<port>`; their documents in one text.

use k8s_openapi::api::core::v1::ServicePort;

/// The default port among `ports`: 80 when there is one, else the first.
pub(super) fn default_port(ports: &[&ServicePort]) -> usize {
    ports.iter().position(|p| p.port == 80).unwrap_or_default()
}

/// The Backend of one Service port: the Service's own name for its
/// default port, `<service>.<port>` for the others.
pub(super) fn backend_name(service: &str, port: &ServicePort, default: bool) -> String {
    if default {
        service.to_string()
    } else {
        format!("{service}.{}", port.port)
    }
}

/// Starts another YAML document in `text` (a separator after the first).
pub(super) fn next_document(text: &mut String) {
    if !text.is_empty() {
        text.push_str("---\n");
    }
}
