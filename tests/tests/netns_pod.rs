//! Interception as in an injected pod, for real: a "pod" network namespace
//! whose rules are installed by running `weft-proxy iptables` exactly as
//! the init container does (as root, the injector's arguments), a sidecar
//! running as the proxy's own non-root uid 1337 with the injector's
//! environment, and an app under another uid; a "peer" namespace plays the
//! rest of the cluster. Both links carry IPv4 and IPv6. It shows:
//!
//! - the app's connections to a ClusterIP (assigned nowhere) are routed by
//!   original destination, IPv4 and IPv6, and the proxy's own upstream
//!   connections are not redirected back to it (each request is counted
//!   once);
//! - connections from the peer to the app's port are intercepted (the app
//!   sees them come from the proxy on loopback), IPv4 and IPv6;
//! - an excluded inbound port, an excluded outbound port and an excluded
//!   IPv6 CIDR bypass the proxy (the app sees the peer itself; the proxy
//!   counts nothing).
//!
//! Needs root, `ip`, `iptables`, `ip6tables`, `curl`, `python3` and
//! `setpriv` (skips without them, fails under CI), and the built
//! `weft-proxy`.

use std::time::{Duration, Instant};
use weft_tests::netns::{sibling_binary, skip, tools_or_skip, Sandbox};

/// The proxy's uid and gid, as the injector sets them.
const PROXY_ID: u32 = 1337;
/// The app's uid and gid.
const APP_ID: u32 = 1000;

/// HTTP servers on every port given (IPv4 and IPv6), naming themselves and
/// what they saw, the client's address included.
const WEB_PY: &str = r#"
import http.server, socket, sys, threading
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        peer = self.client_address[0]
        if peer.startswith("::ffff:"):
            peer = peer[7:]
        body = ("%s saw host=%s path=%s from=%s" % (name, self.headers.get("Host"), self.path, peer)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
def serve(port):
    S(("::", port), H).serve_forever()
for p in sys.argv[3:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
serve(int(sys.argv[2]))
"#;

/// Sum of the samples of `name` whose labels contain every one of `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

struct Pod<'a> {
    sb: &'a mut Sandbox,
    ns: String,
}

impl Pod<'_> {
    /// The sidecar's request count for `direction` (`outbound`/`inbound`).
    fn requests(&self, direction: &str) -> f64 {
        let text = self
            .sb
            .curl(&self.ns, &[], "http://127.0.0.1:15000/metrics")
            .1;
        let label = format!("direction=\"{direction}\"");
        metric(&text, "weft_requests_total", &[&label])
    }

    /// Waits until the sidecar has counted exactly `want` requests for
    /// `direction`; fails at once if it counted more.
    fn counted(&mut self, direction: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.requests(direction);
            assert!(
                n <= want,
                "{n} {direction} requests counted, expected {want}"
            );
            if n == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} {direction} requests counted, expected {want}"
            );
            self.sb.check_children();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_pod_intercepts_as_injected_ipv4_and_ipv6() {
    let Some(tools) = tools_or_skip("netns pod test") else {
        return;
    };
    let bin = sibling_binary("weft-proxy");
    let pid = std::process::id();
    let x = pid % 250 + 1;
    let (pod_ip, peer_ip) = (format!("10.215.{x}.1"), format!("10.215.{x}.2"));
    let (pod_ip6, peer_ip6) = (format!("fd15:{x:x}::1"), format!("fd15:{x:x}::2"));
    let (cluster_ip, cluster_ip6) = (format!("10.96.{x}.7"), format!("fd96:{x:x}::7"));
    let mut sb = Sandbox::new(tools, "pod");
    let Some(app_python) = sb.python_for_anyone() else {
        return skip(
            "netns pod test",
            "no python3 that an unprivileged uid may run",
        );
    };
    let (pod, peer) = (format!("weft-pod-{pid}"), format!("weft-peer-{pid}"));
    sb.add_namespace(&pod);
    sb.add_namespace(&peer);
    sb.link(
        &pod,
        &format!("{pod_ip}/24"),
        &peer,
        &format!("{peer_ip}/24"),
    );
    sb.ip(&pod, &format!("-6 addr add {pod_ip6}/64 dev veth0 nodad"));
    sb.ip(&peer, &format!("-6 addr add {peer_ip6}/64 dev veth1 nodad"));
    // The ClusterIPs are routed onto the link only so `connect` can start:
    // nothing there answers for them.
    sb.ip(&pod, &format!("route add {cluster_ip}/32 dev veth0"));
    sb.ip(&pod, &format!("-6 route add {cluster_ip6}/128 dev veth0"));
    let proxy = sb.install(&bin);
    let python = sb.tools.python3.to_string_lossy().into_owned();

    // Two Services by ClusterIP (what the control plane writes for a
    // cluster's Services): reviews on IPv4, ratings on IPv6, both at the
    // peer's web server.
    let service = |name: &str, ip: &str, endpoint: &str| {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\n\
             metadata: {{name: {name}, namespace: default, annotations: {{weft.dev/cluster-ips: \"{ip}\"}}}}\n\
             spec: {{protocol: http, port: 9080, endpoints: [{{address: \"{endpoint}\"}}]}}\n---\n"
        )
    };
    let config = service("reviews", &cluster_ip, &format!("{peer_ip}:8001"))
        + &service("ratings", &cluster_ip6, &format!("[{peer_ip6}]:8001"));
    let config = sb.write("weft.yaml", config.as_bytes());

    // The rest of the cluster: a web server on 8001 and 7070.
    sb.spawn(
        "peer-web",
        &peer,
        &[&python, "-c", WEB_PY, "peer", "8001", "7070"],
    );
    sb.wait_ready(&peer, "http://127.0.0.1:8001/");
    sb.wait_ready(&peer, "http://127.0.0.1:7070/");

    // The init container: the injector's arguments, as root.
    #[rustfmt::skip]
    sb.exec(&pod, &[
        &proxy, "iptables", "--proxy-uid", "1337", "--proxy-gid", "1337",
        "--outbound-port", "15001", "--inbound-port", "15006",
        "--exclude-inbound-ports", "9090", "--exclude-outbound-ports", "7070",
        "--exclude-outbound-cidrs", &format!("192.0.2.0/24,{peer_ip6}/128"),
    ]);
    let (v4, v6) = (
        sb.tools.iptables.to_string_lossy().into_owned(),
        sb.tools.ip6tables.to_string_lossy().into_owned(),
    );
    let nat4 = sb.exec(&pod, &[&v4, "-t", "nat", "-S"]);
    let nat6 = sb.exec(&pod, &[&v6, "-t", "nat", "-S"]);
    for (nat, lo) in [(&nat4, "127.0.0.0/8"), (&nat6, "::1/128")] {
        for rule in [
            "-A OUTPUT -p tcp -j WEFT_OUTPUT",
            "-A PREROUTING -p tcp -j WEFT_INBOUND",
            "-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A WEFT_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "-A WEFT_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
            &format!("-A WEFT_OUTPUT -d {lo} -j RETURN"),
        ] {
            assert!(nat.contains(rule), "{rule:?} missing:\n{nat}");
        }
    }
    assert!(
        nat4.contains("192.0.2.0/24") && !nat4.contains(&peer_ip6),
        "{nat4}"
    );
    assert!(
        nat6.contains(&peer_ip6) && !nat6.contains("192.0.2.0"),
        "{nat6}"
    );

    // The sidecar: uid 1337, the injector's environment.
    sb.spawn_as(
        "weft-proxy",
        &pod,
        PROXY_ID,
        &[
            ("WEFT_CONFIG", &config),
            ("WEFT_OUTBOUND", "127.0.0.1:15001"),
            ("WEFT_INBOUND", "0.0.0.0:15006"),
            ("WEFT_PROBES", "0.0.0.0:15020"),
            ("WEFT_APP", "127.0.0.1:8080"),
        ],
        &[&proxy, "run"],
    );
    sb.wait_ready(&pod, "http://127.0.0.1:15000/ready");
    // The app: its own uid, on 8080 (intercepted) and 9090 (excluded).
    let app_python = app_python.to_string_lossy().into_owned();
    sb.spawn_as(
        "app",
        &pod,
        APP_ID,
        &[],
        &[&app_python, "-c", WEB_PY, "app", "8080", "9090"],
    );
    sb.wait_ready(&pod, "http://127.0.0.1:8080/");
    sb.wait_ready(&pod, "http://127.0.0.1:9090/");
    let mut p = Pod {
        sb: &mut sb,
        ns: pod.clone(),
    };
    let app = |p: &Pod, extra: &[&str], url: &str| p.sb.curl_as(Some(APP_ID), &p.ns, extra, url);
    let from_peer = |p: &Pod, url: &str| p.sb.curl(&peer, &["-g"], url);

    // Outbound by ClusterIP, IPv4 then IPv6; a Host naming nothing.
    let host = ["-g", "-H", "Host: nowhere.example"];
    let (code, body) = app(&p, &host, &format!("http://{cluster_ip}:9080/v4"));
    assert_eq!(code, 200, "IPv4 ClusterIP: {body}");
    assert_eq!(
        body,
        format!("peer saw host=nowhere.example path=/v4 from={pod_ip}")
    );
    p.counted("outbound", 1.0);
    let (code, body) = app(&p, &host, &format!("http://[{cluster_ip6}]:9080/v6"));
    assert_eq!(code, 200, "IPv6 ClusterIP: {body}");
    assert_eq!(
        body,
        format!("peer saw host=nowhere.example path=/v6 from={pod_ip6}")
    );
    p.counted("outbound", 2.0);

    // Excluded outbound: port 7070 and the peer's IPv6 address go direct,
    // counted by nobody; the same peer on 8001 over IPv4 is intercepted.
    let (code, body) = app(&p, &[], &format!("http://{peer_ip}:7070/direct"));
    assert_eq!(
        (code, body.ends_with(&format!("from={pod_ip}"))),
        (200, true),
        "{body}"
    );
    let (code, body) = app(&p, &["-g"], &format!("http://[{peer_ip6}]:8001/direct6"));
    assert_eq!(
        (code, body.ends_with(&format!("from={pod_ip6}"))),
        (200, true),
        "{body}"
    );
    let (code, body) = app(&p, &[], &format!("http://{peer_ip}:8001/passthrough"));
    assert_eq!(code, 200, "{body}");
    p.counted("outbound", 3.0);

    // Inbound to the app's port, IPv4 then IPv6: through the proxy, which
    // hands it to the app on loopback.
    let (code, body) = from_peer(&p, &format!("http://{pod_ip}:8080/in"));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("app saw") && body.ends_with("path=/in from=127.0.0.1"),
        "{body}"
    );
    p.counted("inbound", 1.0);
    let (code, body) = from_peer(&p, &format!("http://[{pod_ip6}]:8080/in6"));
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with("path=/in6 from=127.0.0.1"), "{body}");
    p.counted("inbound", 2.0);
    // The excluded inbound port: the app sees the peer itself.
    let (code, body) = from_peer(&p, &format!("http://{pod_ip}:9090/skip"));
    assert_eq!(
        (code, body),
        (
            200,
            format!("app saw host={pod_ip}:9090 path=/skip from={peer_ip}")
        )
    );
    let (code, body) = from_peer(&p, &format!("http://[{pod_ip6}]:9090/skip6"));
    assert_eq!(code, 200, "{body}");
    assert!(body.ends_with(&format!("from={peer_ip6}")), "{body}");
    let (code, _) = from_peer(&p, &format!("http://{pod_ip}:8080/again"));
    assert_eq!(code, 200);
    p.counted("inbound", 3.0);
    p.counted("outbound", 3.0);
}
