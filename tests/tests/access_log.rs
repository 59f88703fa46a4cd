//! The access log: one JSON line per request with target `weft::access`,
//! off by default, on by flag or by MeshConfig (following hot reloads), with
//! Envoy-style response flags.

use serde_json::Value;
use std::time::Duration;
use weft_tests::*;

fn backend(name: &str, addr: &str, policy: &str) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{address: \"{addr}\"}}]\n---\n"
    );
    if !policy.is_empty() {
        y.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}---\n"
        ));
    }
    y
}

const MESH_ON: &str = "apiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  accessLog: {enabled: true}\n---\n";
const MESH_OFF: &str = "apiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  accessLog: {enabled: false}\n---\n";

/// A port nothing listens on.
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The proxy's access lines so far, parsed.
fn access_lines(p: &Proxy) -> Vec<Value> {
    p.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "weft::access")
        .collect()
}

/// Waits for the access line of a request to `authority`.
async fn line_for(p: &Proxy, authority: &str) -> Value {
    eventually(
        &format!("an access line for {authority}"),
        Duration::from_secs(5),
        || {
            let found = access_lines(p)
                .into_iter()
                .find(|v| v["authority"] == authority);
            async move { found }
        },
    )
    .await
}

#[tokio::test]
async fn each_request_gets_a_line_with_its_flags() {
    let live = Upstream::start("live").await;
    let dead = closed_addr();
    let mut yaml = backend("live", &live.addr.to_string(), "");
    yaml.push_str(&backend(
        "dead",
        &dead.to_string(),
        "  retry: {attempts: 2, retryOn: [connect-failure], backoff: {baseInterval: 1ms, maxInterval: 5ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}\n",
    ));
    yaml.push_str(&backend(
        "full",
        &live.addr.to_string(),
        "  circuitBreaker: {maxRequests: 0}\n",
    ));
    let p = Proxy::builder(yaml)
        .arg("--access-log")
        .arg("on")
        .app(live.addr)
        .start();

    let r = get(&p.url("/hello"), &[("host", "live")]).await.unwrap();
    assert_eq!(r.status, 200);
    let l = line_for(&p, "live").await;
    println!("access line: {l}");
    assert_eq!(l["message"], "access", "{l}");
    assert_eq!(l["level"], "INFO", "{l}");
    assert_eq!(l["direction"], "outbound", "{l}");
    assert_eq!(l["method"], "GET", "{l}");
    assert_eq!(l["path"], "/hello", "{l}");
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["backend"], "default/live", "{l}");
    assert_eq!(l["upstream"], live.addr.to_string(), "{l}");
    assert_eq!(l["retries"], 0, "{l}");
    assert_eq!(l["flags"], "-", "{l}");
    assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    assert!(
        l["peer"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{l}"
    );
    assert!(l["route"].is_string(), "{l}");

    let r = get(&p.url("/"), &[("host", "nowhere")]).await.unwrap();
    assert_eq!(r.status, 404);
    let l = line_for(&p, "nowhere").await;
    assert_eq!(l["status"], 404, "{l}");
    assert_eq!(l["flags"], "NR", "{l}");
    assert_eq!(l["upstream"], "-", "{l}");
    assert_eq!(l["backend"], "-", "{l}");

    let r = get(&p.url("/"), &[("host", "dead")]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let l = line_for(&p, "dead").await;
    println!("access line: {l}");
    assert_eq!(l["status"], 502, "{l}");
    assert_eq!(l["flags"], "UF,URX", "{l}");
    assert_eq!(l["retries"], 2, "{l}");
    assert_eq!(l["upstream"], dead.to_string(), "{l}");

    let r = get(&p.url("/"), &[("host", "full")]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    let l = line_for(&p, "full").await;
    assert_eq!(l["status"], 503, "{l}");
    assert_eq!(l["flags"], "UO", "{l}");
    assert_eq!(l["retries"], 0, "{l}");

    // The inbound side logs too, with the local app as its upstream.
    let url = format!("http://{}/in", p.inbound);
    let r = get(&url, &[("host", "me.local")]).await.unwrap();
    assert_eq!(r.status, 200);
    let l = line_for(&p, "me.local").await;
    assert_eq!(l["direction"], "inbound", "{l}");
    assert_eq!(l["path"], "/in", "{l}");
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["upstream"], live.addr.to_string(), "{l}");
    assert_eq!(l["flags"], "-", "{l}");
}

#[tokio::test]
async fn off_by_default_and_a_mesh_config_turns_it_on() {
    let live = Upstream::start("live").await;
    let yaml = backend("live", &live.addr.to_string(), "");
    let p = Proxy::start(yaml.clone());
    for _ in 0..3 {
        let r = get(&p.url("/"), &[("host", "live")]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // The MeshConfig turns it on, without the flag, on a hot reload. The
    // first line the proxy writes is for a request after it: the three
    // earlier ones, answered before the reload, wrote none.
    p.write_config(&format!("{MESH_ON}{yaml}"));
    let l = first_line_after_reload(&p).await;
    assert_eq!(l["flags"], "-", "{l}");
}

/// Sends requests for `/after` until one of them is logged (a reload that
/// turns the access log on has landed), and returns the first access line
/// the proxy wrote, which must be that request's: anything the proxy
/// answered before would have been written earlier.
async fn first_line_after_reload(p: &Proxy) -> Value {
    eventually(
        "an access line after the reload",
        Duration::from_secs(10),
        || {
            let url = p.url("/after");
            async move {
                let _ = get(&url, &[("host", "live")]).await;
                access_lines(p).into_iter().next()
            }
        },
    )
    .await;
    let first = access_lines(p).remove(0);
    assert_eq!(first["path"], "/after", "the first access line: {first}");
    first
}

#[tokio::test]
async fn a_mesh_config_overrides_the_flag() {
    let live = Upstream::start("live").await;
    let yaml = format!("{MESH_OFF}{}", backend("live", &live.addr.to_string(), ""));
    let p = Proxy::builder(yaml).arg("--access-log").arg("on").start();
    for _ in 0..3 {
        let r = get(&p.url("/"), &[("host", "live")]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // The MeshConfig's `enabled: false` won over the flag: once another
    // MeshConfig turns the log on, its first line is for a later request.
    p.write_config(&format!(
        "{MESH_ON}{}",
        backend("live", &live.addr.to_string(), "")
    ));
    first_line_after_reload(&p).await;
}
