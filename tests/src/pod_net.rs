//! Stand-in Pods for the Kubernetes tests. The API server refuses loopback
//! endpoint addresses (422), so each test's "Pods" get addresses in a
//! network namespace it creates: joined to this host by a veth pair, with
//! no route out of it (only the link's own /24). A Pod address relays to a
//! server the test runs on loopback as usual (an [`Upstream`], a Python
//! gRPC peer, a sidecar's inbound listener): the sidecars under test dial
//! the Pod's address, the bytes cross the veth into the namespace, and the
//! listener there (opened by this process inside the namespace, see
//! [`crate::netns::listen_in`]) passes them on.
//!
//! Needs root and `ip`; without them [`PodNet::new`] prints why the test
//! skips (and fails under CI, as every netns test does).

use crate::netns::{listen_in, run, text, tools_or_skip, Sandbox};
use crate::upstream::Upstream;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use tokio::task::JoinHandle;

/// Pod networks made by this process so far (each gets its own /24).
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// One Pod network: a namespace, its link to this host, the Pod addresses
/// handed out and the relays behind them.
pub struct PodNet {
    sandbox: Sandbox,
    ns: String,
    host_link: String,
    pod_link: String,
    /// The /24's first three octets.
    prefix: [u8; 3],
    next: AtomicU32,
    relays: Mutex<Vec<JoinHandle<()>>>,
}

impl PodNet {
    /// A Pod network for `test`, or None (printed why) when this machine
    /// cannot make one.
    pub fn new(test: &str) -> Option<PodNet> {
        let tools = tools_or_skip(test)?;
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("weft-pods-{pid}-{n}");
        let tag = format!("pods-{n}");
        // Veth names are at most 15 bytes.
        let host_link = format!("wp{}h{n}", pid % 100_000);
        let pod_link = format!("wp{}p{n}", pid % 100_000);
        let prefix = [10, 240 + (pid % 8) as u8, (n % 250) as u8 + 1];
        let mut sandbox = Sandbox::new(tools, &tag);
        sandbox.add_namespace(&ns);
        let ip = sandbox.tools.ip.clone();
        let host = |args: &str| {
            let out = run(Command::new(&ip).args(args.split_whitespace()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(out.status.success(), "ip {args}: {}", text(&out.stderr));
        };
        let _ = run(Command::new(&ip).args(["link", "del", &host_link]));
        host(&format!(
            "link add {host_link} type veth peer name {pod_link} netns {ns}"
        ));
        let [a, b, c] = prefix;
        host(&format!("addr add {a}.{b}.{c}.1/24 dev {host_link}"));
        host(&format!("link set {host_link} up"));
        sandbox.ip(&ns, &format!("addr add {a}.{b}.{c}.2/24 dev {pod_link}"));
        sandbox.ip(&ns, &format!("link set {pod_link} up"));
        Some(PodNet {
            sandbox,
            ns,
            host_link,
            pod_link,
            prefix,
            next: AtomicU32::new(2),
            relays: Mutex::new(Vec::new()),
        })
    }

    /// The Pod network's namespace (for processes started in it).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The sandbox holding the namespace: to start processes in it.
    pub fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }

    /// A new Pod address in the network.
    pub fn pod_ip(&self) -> Ipv4Addr {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(k < 255, "out of Pod addresses");
        let [a, b, c] = self.prefix;
        if k > 2 {
            let link = &self.pod_link;
            self.sandbox
                .ip(&self.ns, &format!("addr add {a}.{b}.{c}.{k}/24 dev {link}"));
        }
        Ipv4Addr::new(a, b, c, k as u8)
    }

    /// Gives the link IPv6 too (`fd<b>:<c>::1` on this host's end, `::2` on
    /// the Pod's; no duplicate address detection, so usable at once) and
    /// returns the Pod's IPv6 address.
    pub fn ipv6(&self) -> std::net::Ipv6Addr {
        let [_, b, c] = self.prefix;
        let (host, pod) = (format!("fd{b:02x}:{c:x}::1"), format!("fd{b:02x}:{c:x}::2"));
        let out = run(Command::new(&self.sandbox.tools.ip).args([
            "-6",
            "addr",
            "add",
            &format!("{host}/64"),
            "dev",
            &self.host_link,
            "nodad",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "host IPv6 address: {}",
            text(&out.stderr)
        );
        let link = &self.pod_link;
        self.sandbox
            .ip(&self.ns, &format!("-6 addr add {pod}/64 dev {link} nodad"));
        pod.parse().expect("IPv6 address")
    }

    /// A Pod address (a new one) whose port relays every connection to
    /// `target`: the address to put in an EndpointSlice for a server the
    /// test runs at `target`.
    pub fn expose(&self, target: SocketAddr) -> SocketAddr {
        self.expose_at(self.pod_ip(), 0, target)
    }

    /// As [`PodNet::expose`], at `ip:port` (`port` 0: any).
    pub fn expose_at(&self, ip: Ipv4Addr, port: u16, target: SocketAddr) -> SocketAddr {
        let std = listen_in(&self.ns, SocketAddr::new(ip.into(), port));
        let listener = tokio::net::TcpListener::from_std(std).expect("listener in the namespace");
        let addr = listener.local_addr().expect("pod address");
        let relay = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = out.set_nodelay(true);
                        let _ = inbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(relay);
        addr
    }

    /// An [`Upstream`] named `name` reached at a new Pod address (its
    /// `addr` is that address; it listens on loopback behind the relay).
    pub async fn upstream(&self, name: &str) -> Upstream {
        let mut u = Upstream::start(name).await;
        u.addr = self.expose(u.addr);
        u
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for r in self
            .relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            r.abort();
        }
        let _ = run(Command::new(&self.sandbox.tools.ip).args(["link", "del", &self.host_link]));
        // The Sandbox deletes the namespace (and the Pod end of the link).
    }
}

/// A stand-in app for probe tests (a Python program for `python3 -c`):
/// HTTP/1.1 on `0.0.0.0:port`, `/healthz` 200 "healthy", `/broken` a 500
/// naming the `X-Probe` header it got, anything else 200 "app".
pub fn probe_app_py(port: u16) -> String {
    format!(
        r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/healthz":
            code, body = 200, "healthy"
        elif self.path == "/broken":
            code, body = 500, "broken, X-Probe=%s" % self.headers.get("X-Probe")
        else:
            code, body = 200, "app"
        body = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", {port}), H).serve_forever()
"#
    )
}
