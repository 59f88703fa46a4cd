//! Routing by original destination, with real interception: stand-in Pods
//! are network namespaces (addresses on a veth pair, no route out), the
//! control plane reads the fake API server's Services, EndpointSlices and
//! Pods plus a file with an HTTPRoute and an AuthorizationPolicy, and each
//! Pod's sidecar reaches the control plane through a socket this test
//! opens inside the Pod's namespace. The client Pod's app dials ClusterIPs,
//! addresses assigned nowhere (a link route makes `connect` possible; only
//! the iptables redirect makes them answer):
//!
//! - HTTP with a Host naming nothing is routed by the Service's HTTPRoute
//!   (a header match sends elsewhere), where the same Host sent
//!   explicitly to the proxy finds no route;
//! - a server-speaks-first opaque TCP Service works through its ClusterIP,
//!   over mTLS: the peer sidecar admits the client's SPIFFE identity under
//!   an AuthorizationPolicy allowing only it, and closes the connection once
//!   the policy allows only another identity;
//! - neither ClusterIP is in the client sidecar's config before the first
//!   connection: it learns each on demand, and that first connection works.
//!
//! Needs root, `ip`, `iptables`, `curl`, `python3` and `setpriv` (skips
//! without them, fails under CI), and the built `weft-proxy` and
//! `weft-control-plane` binaries.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::kube_fake::KubeFake;
use weft_tests::netns::{listen_in, sibling_binary, tools_or_skip, Sandbox};
use weft_tests::ControlPlane;

const LIMIT: Duration = Duration::from_secs(15);
const CLIENT: &str = "spiffe://weft.local/ns/shop/sa/productpage";

/// An HTTP server that names itself and what it saw.
const WEB_PY: &str = r#"
import http.server, sys
name, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s saw host=%s path=%s" % (name, self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
"#;

/// A server-speaks-first TCP service: a greeting, then one line echoed.
const GREETER_PY: &str = r#"
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"hello from greeter\n")
        self.wfile.flush()
        self.wfile.write(b"echo " + self.rfile.readline())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 7000), H).serve_forever()
"#;

/// Its client: prints the greeting and the echo (nothing if closed).
const DIAL_PY: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rwb")
greeting = f.readline()
if greeting:
    f.write(b"ping\n")
    f.flush()
    greeting += f.readline()
sys.stdout.write(greeting.decode())
"#;

/// The route on Service `reviews` (header `x-canary: yes` goes to Backend
/// `canary`, the rest to `stable`, both at the server Pod's web apps) and
/// the policy on `greeter` admitting only `allowed`. (The route's Backends
/// are in the file too: the control plane validates its files on their
/// own, so a file cannot yet name a Service's Backend in a `backendRef`.)
fn files(server_ip: &str, allowed: &str) -> String {
    let backend = |name: &str, port: u16| {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{port: 9080, endpoints: [{{address: \"{server_ip}:{port}\"}}]}}\n---\n"
        )
    };
    format!(
        "{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews, namespace: shop}}\n\
         spec:\n  parentRefs: [{{kind: Service, name: reviews}}]\n  rules:\n\
         \x20   - matches: [{{headers: [{{name: x-canary, value: \"yes\"}}]}}]\n      backendRefs: [{{name: canary}}]\n\
         \x20   - backendRefs: [{{name: stable}}]\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: greeter-only, namespace: shop}}\n\
         spec:\n  targetRef: {{kind: Service, name: greeter}}\n  action: Allow\n  rules:\n\
         \x20   - from: {{identities: [\"{allowed}\"]}}\n",
        backend("stable", 8001),
        backend("canary", 8002),
    )
}

/// A Service with one port and one EndpointSlice of one address; with
/// `pod`, the endpoint is that (meshed) Pod.
async fn service(
    fake: &KubeFake,
    name: &str,
    port: Value,
    target: SocketAddr,
    pod: Option<&str>,
) -> String {
    let svc = fake
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"ports": [port.clone()]}}))
        .await;
    let mut endpoint =
        json!({"addresses": [target.ip().to_string()], "conditions": {"ready": true}});
    if let Some(pod) = pod {
        endpoint["targetRef"] = json!({"kind": "Pod", "namespace": "shop", "name": pod});
    }
    fake.create(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-a"), "namespace": "shop", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": port["name"], "port": target.port(), "protocol": "TCP"}],
        "endpoints": [endpoint]}))
        .await;
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string()
}

/// Relays connections to `listener` (inside a Pod's namespace) to `to`.
fn relay(listener: std::net::TcpListener, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    })
}

/// Sum of the samples of `name` whose labels contain every one of `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Polls `f` (blocking) until it gives a value, failing after `LIMIT`.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_ips_route_by_original_destination_over_mtls() {
    let Some(tools) = tools_or_skip("netns ClusterIP test") else {
        return;
    };
    let proxy_bin = sibling_binary("weft-proxy");
    let pid = std::process::id();
    let x = pid % 250 + 1;
    let (client_ip, server_ip) = (format!("10.214.{x}.1"), format!("10.214.{x}.2"));
    let mut sb = Sandbox::new(tools, "cluster-ip");
    let (client, server) = (format!("weft-cip-c-{pid}"), format!("weft-cip-s-{pid}"));
    sb.add_namespace(&client);
    sb.add_namespace(&server);
    sb.link(
        &client,
        &format!("{client_ip}/24"),
        &server,
        &format!("{server_ip}/24"),
    );
    let proxy = sb.install(&proxy_bin);
    let python = sb.tools.python3.to_string_lossy().into_owned();

    // The server Pod: two plain web apps (unmeshed endpoints) and the
    // greeter behind its sidecar.
    sb.spawn(
        "reviews",
        &server,
        &[&python, "-c", WEB_PY, "reviews", "8001"],
    );
    sb.spawn(
        "canary",
        &server,
        &[&python, "-c", WEB_PY, "canary", "8002"],
    );
    sb.spawn("greeter", &server, &[&python, "-c", GREETER_PY]);
    sb.wait_ready(&server, "http://127.0.0.1:8001/");
    sb.wait_ready(&server, "http://127.0.0.1:8002/");

    // The cluster.
    let fake = KubeFake::start().await;
    weft_tests::kube_cluster::install_control_plane_account(&fake, &["shop"]).await;
    let web = |p: u16| -> SocketAddr { format!("{server_ip}:{p}").parse().unwrap() };
    let http_port = json!({"name": "http", "port": 9080});
    let reviews_ip = service(&fake, "reviews", http_port, web(8001), None).await;
    fake.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greeter-1", "namespace": "shop", "annotations": {"weft.dev/injected": "proxy"}},
        "spec": {"serviceAccountName": "greeter", "containers": [{"name": "app", "image": "greeter"}]}}))
        .await;
    fake.merge_patch(
        "v1",
        "Pod",
        Some("shop"),
        "greeter-1",
        Some("status"),
        json!({"status": {"phase": "Running", "podIPs": [{"ip": server_ip}]}}),
    )
    .await;
    let tcp_port = json!({"name": "tcp", "port": 7000, "appProtocol": "tcp"});
    let greeter_ip = service(&fake, "greeter", tcp_port, web(7000), Some("greeter-1")).await;
    for ip in [&reviews_ip, &greeter_ip] {
        assert!(
            !ip.starts_with("10.214."),
            "ClusterIP {ip} must be assigned nowhere"
        );
    }

    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let mut cp = ControlPlane::start_kubernetes_and_files(&kubeconfig, &files(&server_ip, CLIENT));
    let ca = sb.write("ca.pem", &std::fs::read(cp.ca_file()).expect("CA file"));
    let cp_port = cp.listen.port();
    let local_cp: SocketAddr = format!("127.0.0.1:{cp_port}").parse().unwrap();
    let _relays = [&client, &server].map(|ns| relay(listen_in(ns, local_cp), cp.listen));

    // The sidecars, unprivileged, in their Pods.
    let sidecar = |sa: &str, extra: &[&str]| -> Vec<String> {
        let token = cp.token("shop", sa);
        #[rustfmt::skip]
        let mut args: Vec<String> = [
            proxy.as_str(), "run", "--control-plane", &format!("https://{local_cp}"),
            "--control-plane-ca", &ca, "--namespace", "shop", "--service-account", sa,
            "--bootstrap-token", &token, "--outbound", "0.0.0.0:15001",
            "--inbound", "0.0.0.0:15006", "--admin", "127.0.0.1:15000",
        ].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // The greeter's sidecar has no app on `--app`: inbound TCP must go to
    // the port the peer dialled.
    let greeter_args = sidecar("greeter", &["--service", "greeter", "--app", "127.0.0.1:1"]);
    let client_args = sidecar("productpage", &["--service", "productpage"]);
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    sb.spawn_as_proxy("greeter-sidecar", &server, &strs(&greeter_args));
    sb.spawn_as_proxy("client-sidecar", &client, &strs(&client_args));
    sb.wait_ready(&server, "http://127.0.0.1:15000/ready");
    sb.wait_ready(&client, "http://127.0.0.1:15000/ready");

    // Interception: the client Pod's outbound; the server Pod's inbound
    // except the unmeshed web apps.
    sb.intercept(&client, &proxy, &["--exclude-inbound-ports", "15000"]);
    sb.intercept(
        &server,
        &proxy,
        &["--exclude-inbound-ports", "15000,8001,8002"],
    );
    // The ClusterIPs are routed onto the Pod's link only so `connect` can
    // start: nothing there answers for them.
    for ip in [&reviews_ip, &greeter_ip] {
        sb.ip(&client, &format!("route add {ip}/32 dev veth0"));
    }

    // (c) Neither ClusterIP is known yet.
    let config = sb.curl(&client, &[], "http://127.0.0.1:15000/config").1;
    assert!(
        !config.contains(&reviews_ip)
            && !config.contains(&greeter_ip)
            && !config.contains("reviews"),
        "the client sidecar already holds the Services:\n{config}"
    );

    // (a) + (c): the first request to the ClusterIP, Host naming nothing,
    // is routed by reviews' route; the Host reaches the app unchanged.
    let reviews_url = format!("http://{reviews_ip}:9080/first");
    let (code, body) = sb.curl(&client, &["-H", "Host: nowhere.example"], &reviews_url);
    assert_eq!(code, 200, "first request by ClusterIP: {body}");
    assert_eq!(body, "reviews saw host=nowhere.example path=/first");
    let (code, body) = sb.curl(
        &client,
        &["-H", "Host: nowhere.example", "-H", "x-canary: yes"],
        &reviews_url,
    );
    assert_eq!(code, 200, "canary request by ClusterIP: {body}");
    assert!(
        body.starts_with("canary saw host=nowhere.example"),
        "{body}"
    );
    // Not intercepted (the proxy dialled explicitly): the Host decides, and
    // it names nothing.
    let (code, body) = sb.curl(
        &client,
        &["-H", "Host: nowhere.example"],
        "http://127.0.0.1:15001/first",
    );
    assert_eq!(
        code, 404,
        "an explicit request is routed by its Host: {body}"
    );
    let config = sb.curl(&client, &[], "http://127.0.0.1:15000/config").1;
    assert!(config.contains(&reviews_ip), "learnt on demand:\n{config}");

    // (b) + (c): opaque, server-speaks-first, by ClusterIP, first try.
    let dial = |sb: &Sandbox| -> String {
        let out = sb.try_exec(&client, &[&python, "-c", DIAL_PY, &greeter_ip, "7000"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(dial(&sb), "hello from greeter\necho ping\n");
    let metrics = sb.curl(&server, &[], "http://127.0.0.1:15000/metrics").1;
    let inbound_ok = metric(
        &metrics,
        "weft_tls_handshakes_total",
        &["direction=\"inbound\"", "result=\"ok\""],
    );
    assert!(
        inbound_ok >= 1.0,
        "the greeter's sidecar saw no mTLS:\n{metrics}"
    );

    // The same connection once only another identity may call: closed.
    cp.write_config(&files(&server_ip, "spiffe://weft.local/ns/shop/sa/other"));
    poll("the greeter's sidecar to hold the new policy", || {
        let config = sb.curl(&server, &[], "http://127.0.0.1:15000/config").1;
        config.contains("sa/other").then_some(())
    });
    assert_eq!(dial(&sb), "", "a forbidden identity got through");
    let metrics = sb.curl(&server, &[], "http://127.0.0.1:15000/metrics").1;
    let forbidden = metric(&metrics, "weft_inbound_rejected_total", &["forbidden"]);
    assert!(
        forbidden >= 1.0,
        "no forbidden connection counted:\n{metrics}"
    );
    cp.kill();
}
