//! End-to-end transparent interception: an unmodified client in an "app" network namespace
//! reaches an upstream in a "server" namespace through the sidecar, because
//! `weft-proxy iptables` redirected its traffic.
//!
//! Needs root, `ip`, `iptables`, `curl`, `python3` and `setpriv`; without them the test is
//! skipped, except under CI (env `CI` set), where it fails. The proxy binary is not built by
//! `cargo test -p weft-tests`: run `cargo build -p weft-proxy` first. Everything happens in
//! two namespaces this test creates and always deletes; no traffic leaves them.

use std::time::{Duration, Instant};
use weft_tests::netns::{sibling_binary, tools_or_skip, Sandbox};

/// The upstream: answers every GET with what it saw, so the test can tell it was reached.
const UPSTREAM_PY: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("upstream saw host=%s path=%s" % (self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"#;

/// Sum of `weft_requests_total` samples labelled `direction="outbound"`.
fn outbound_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("weft_requests_total") && l.contains("direction=\"outbound\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn transparent_interception_in_netns() {
    let Some(tools) = tools_or_skip("netns test") else {
        return;
    };
    let bin = sibling_binary("weft-proxy");
    let pid = std::process::id();
    let x = pid % 250 + 1;
    let (app_ip, srv_ip) = (format!("10.213.{x}.1"), format!("10.213.{x}.2"));
    let mut sb = Sandbox::new(tools, "netns");
    let (app, srv) = (format!("weft-app-{pid}"), format!("weft-srv-{pid}"));

    let proxy_s = sb.install(&bin);
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: upstream, namespace: default}}\n\
         spec:\n  protocol: http\n  port: 8000\n  endpoints:\n    - address: {srv_ip}:8000\n"
    );
    let config_s = sb.write("weft.yaml", yaml.as_bytes());

    // Namespaces joined by a veth pair created directly inside them.
    sb.add_namespace(&app);
    sb.add_namespace(&srv);
    sb.link(&app, &format!("{app_ip}/24"), &srv, &format!("{srv_ip}/24"));

    // Upstream in the server namespace.
    let python = sb.tools.python3.to_string_lossy().into_owned();
    sb.spawn("upstream", &srv, &[&python, "-c", UPSTREAM_PY]);
    sb.wait_ready(&srv, "http://127.0.0.1:8000/ping");

    // The sidecar, unprivileged, in the app namespace.
    #[rustfmt::skip]
    let run_args = [
        proxy_s.as_str(), "run",
        "--config", &config_s, "--outbound", "0.0.0.0:15001", "--inbound", "127.0.0.1:15006",
        "--admin", "127.0.0.1:15000",
    ];
    sb.spawn_as_proxy("weft-proxy", &app, &run_args);
    sb.wait_ready(&app, "http://127.0.0.1:15000/ready");

    // Intercept the app namespace's traffic.
    #[rustfmt::skip]
    sb.intercept(&app, &proxy_s, &[
        "--outbound-port", "15001", "--inbound-port", "15006", "--exclude-inbound-ports", "15000",
    ]);

    // An unmodified client: no proxy settings, it just dials the upstream's address.
    let (code, body) = sb.curl(&app, &[], &format!("http://{srv_ip}:8000/hello"));
    assert_eq!(code, 200, "passthrough request failed: {body}");
    assert!(
        body.starts_with("upstream saw host=") && body.ends_with("path=/hello"),
        "unexpected body: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = sb.curl(&app, &[], "http://127.0.0.1:15000/metrics").1;
        if outbound_requests(&metrics) >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        outbound_requests(&metrics) >= 1.0,
        "request did not go through the proxy (no outbound weft_requests_total):\n{metrics}"
    );

    // Same address, but a Host naming the Backend: routed by name.
    let (code, body) = sb.curl(
        &app,
        &["-H", "Host: upstream"],
        &format!("http://{srv_ip}:8000/routed"),
    );
    assert_eq!(code, 200, "routed request failed: {body}");
    assert!(
        body.starts_with("upstream saw") && body.ends_with("path=/routed"),
        "unexpected body: {body}"
    );

    // Uninstall leaves no trace.
    sb.exec(&app, &[&proxy_s, "iptables", "--uninstall"]);
    let iptables = sb.tools.iptables.to_string_lossy().into_owned();
    let nat = sb.exec(&app, &[&iptables, "-t", "nat", "-S"]);
    assert!(!nat.contains("WEFT"), "rules left after uninstall:\n{nat}");
}
