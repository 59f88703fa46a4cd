//! What the Kubernetes tests share: the control plane's ServiceAccount with
//! the RBAC rules the chart installs, this host's non-loopback address
//! for stand-in endpoints, and EndpointSlice documents.

use crate::kube_fake::KubeFake;
use crate::proxy::Proxy;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// The namespace and ServiceAccount the control plane runs as.
pub const CONTROL_PLANE: (&str, &str) = ("weft-system", "weft-control-plane");

/// The control plane's RBAC rules, as the chart installs them: the one
/// definition is `charts/weft/files/rbac.yaml` (`cluster` and `namespace`).
pub const RBAC_RULES: &str = include_str!("../../charts/weft/files/rbac.yaml");

/// Every RBAC rule the control plane's ServiceAccount needs, read from
/// [`RBAC_RULES`] (the fake enforces them, so the installed rules are the
/// tested ones): `[ClusterRole, ClusterRoleBinding, Role, RoleBinding]`, the
/// Role in the control plane's namespace. Tests that take a permission away
/// edit the result (see [`without_rule`]).
pub fn control_plane_rbac() -> Vec<Value> {
    let rules: Value = serde_saphyr::from_str(RBAC_RULES).expect("charts/weft/files/rbac.yaml");
    let (ns, sa) = CONTROL_PLANE;
    let subjects = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
    vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": sa}, "rules": rules["cluster"]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
            "subjects": subjects}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": sa, "namespace": ns}, "rules": rules["namespace"]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": sa, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": subjects}),
    ]
}

/// `role` (a ClusterRole or Role) without the rule on `resource`.
pub fn without_rule(role: &mut Value, resource: &str) {
    if let Some(rules) = role["rules"].as_array_mut() {
        rules.retain(|r| {
            !r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        });
    }
}

/// `role` with `resource` taken out of whichever rule names it.
pub fn without_resource(role: &mut Value, resource: &str) {
    if let Some(rules) = role["rules"].as_array_mut() {
        for r in rules {
            if let Some(rs) = r["resources"].as_array_mut() {
                rs.retain(|x| x != resource);
            }
        }
    }
}

/// Creates the control plane's namespace, ServiceAccount and RBAC
/// ([`control_plane_rbac`]) in `fake`, and the namespaces `namespaces`.
pub async fn install_control_plane_account(fake: &KubeFake, namespaces: &[&str]) {
    install_control_plane_account_with(fake, namespaces, control_plane_rbac()).await;
}

/// As [`install_control_plane_account`], with the RBAC objects `rbac`
/// (for a test that takes a permission away).
pub async fn install_control_plane_account_with(
    fake: &KubeFake,
    namespaces: &[&str],
    rbac: Vec<Value>,
) {
    fake.create_namespace(CONTROL_PLANE.0, json!({})).await;
    for ns in namespaces {
        fake.create_namespace(ns, json!({})).await;
    }
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": CONTROL_PLANE.1, "namespace": CONTROL_PLANE.0}}))
        .await;
    for o in rbac {
        fake.create(o).await;
    }
}

/// An EndpointSlice of Service `ns/service` with one port named `http`
/// and the endpoints `addrs` (all on that port), each ready or not.
pub fn endpoint_slice(
    ns: &str,
    name: &str,
    service: &str,
    port: u16,
    addrs: &[(&str, bool)],
) -> Value {
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints})
}

/// This host's first IPv4 address that is neither loopback nor link-local:
/// the API server refuses loopback endpoint addresses. The tests put their
/// stand-in Pods in a network namespace (`pod_net`); the scale benchmark,
/// which needs no root, listens here.
pub fn host_ipv4() -> Ipv4Addr {
    let mut found = None;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, walked read-only below and freed once.
    unsafe {
        if libc::getifaddrs(&mut list) == 0 {
            let mut p = list;
            while !p.is_null() {
                let ifa = &*p;
                if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
                        found = Some(ip);
                        break;
                    }
                }
                p = ifa.ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    found.expect("these tests need a non-loopback IPv4 address on this host: the API server refuses loopback endpoints")
}

/// `addr`'s IP, as EndpointSlices write it.
pub fn ip_of(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// A mesh-mode sidecar of `shop/<sa>` fronting `app`, proving itself with
/// the projected token in `token_file`, reaching the control plane at
/// `url` (trusting `ca`).
pub fn token_sidecar(url: &str, ca: &Path, sa: &str, token_file: &Path, app: SocketAddr) -> Proxy {
    let mut b = Proxy::builder("").no_config().app(app);
    for a in [
        "--control-plane",
        url,
        "--control-plane-ca",
        &ca.display().to_string(),
        "--namespace",
        "shop",
        "--service",
        sa,
        "--service-account",
        sa,
        "--token-file",
        &token_file.display().to_string(),
    ] {
        b = b.arg(a);
    }
    b.start()
}

/// Writes a token as the kubelet does: a new file renamed over the old one.
pub fn write_token(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).expect("write token");
    std::fs::rename(&tmp, path).expect("rename token");
}
