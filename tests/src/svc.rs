//! Helpers for the load-balancing and connection-pool tests: a Backend
//! `svc` over chosen endpoints, requests to it through the proxy, its
//! `/endpoints` view, and a small upstream that counts its connections.

use crate::{Conn, Proxy, Upstream};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Backend `svc` over `endpoints` (address, weight) with `load_balancer`
/// (flow YAML), and `connection_pool` when given.
pub fn config(
    endpoints: &[(SocketAddr, u32)],
    load_balancer: &str,
    connection_pool: Option<&str>,
) -> String {
    let mut s = String::from(
        "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: svc}
spec:
  protocol: http
  endpoints:
",
    );
    for (addr, weight) in endpoints {
        s += &format!("  - {{address: \"{addr}\", weight: {weight}}}\n");
    }
    s += &format!(
        "---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: svc}}
spec:
  targetRef: {{kind: Backend, name: svc}}
  loadBalancer: {load_balancer}
"
    );
    if let Some(p) = connection_pool {
        s += &format!("  connectionPool: {p}\n");
    }
    s
}

pub fn equal(ups: &[&Upstream]) -> Vec<(SocketAddr, u32)> {
    ups.iter().map(|u| (u.addr, 1)).collect()
}

pub async fn upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut v = Vec::new();
    for n in names {
        v.push(Upstream::start(n).await);
    }
    v
}

pub fn req(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "svc");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// One request on `conn`; the name of the upstream that answered.
pub async fn one(conn: &mut Conn, headers: &[(&str, &str)]) -> String {
    let r = conn
        .send(req("/", headers))
        .await
        .expect("request through the proxy");
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-upstream").expect("x-upstream").to_owned()
}

/// `n` sequential requests on one kept-alive connection; answers per upstream.
pub async fn tally(conn: &mut Conn, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(one(conn, headers).await).or_insert(0) += 1;
    }
    seen
}

pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The `/endpoints` entry of backend `svc`.
pub async fn svc_backend(proxy: &Proxy) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/endpoints").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/endpoints is JSON");
    v["backends"]
        .as_array()
        .and_then(|bs| {
            bs.iter()
                .find(|b| b["backend"].as_str().is_some_and(|k| k.ends_with("/svc")))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no backend svc in {body}"))
}

/// The `/endpoints` entries of backend `svc`.
pub async fn endpoints(proxy: &Proxy) -> Vec<serde_json::Value> {
    let b = svc_backend(proxy).await;
    b["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("backend svc without endpoints: {b}"))
}

pub async fn idle_connections(proxy: &Proxy, addr: SocketAddr) -> u64 {
    endpoints(proxy)
        .await
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .and_then(|e| e["idleConnections"].as_u64())
        .unwrap_or_else(|| panic!("no endpoint {addr}"))
}

/// A tiny HTTP server that waits `delay` before every answer and tracks its
/// connections (accepted, and open now: the proxy closing one is visible).
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub accepted: Arc<AtomicUsize>,
    pub open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(name: &'static str, delay: Duration) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, a, o) = (requests.clone(), accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (r, o) = (r.clone(), o.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            let resp = http::Response::builder()
                                .header("x-upstream", name)
                                .body(Full::new(Bytes::from_static(b"ok\n")))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestServer {
            addr,
            requests,
            accepted,
            open,
            task,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
