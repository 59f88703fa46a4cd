//! Routing end to end: authorities, Gateway API matching and precedence,
//! weighted splits, filters — through the real proxy to real upstreams.

use std::collections::HashMap;
use weft_tests::*;

fn backend(name: &str, up: &Upstream) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  port: 9080\n  endpoints: [{{address: {}}}]\n---\n",
        up.addr
    )
}

async fn via(p: &Proxy, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("host", host)];
    h.extend_from_slice(headers);
    get(&p.url(path), &h).await.expect("request through proxy")
}

#[tokio::test]
async fn authorities_and_proxy_form() {
    let a = Upstream::start("a").await;
    let mut yaml = backend("svc-a", &a);
    yaml.push_str(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: other, namespace: team}\nspec:\n  endpoints: [{address: 127.0.0.1:1}]\n",
    );
    let p = Proxy::start(yaml);
    for host in [
        "svc-a",
        "svc-a:9080",
        "svc-a.default",
        "svc-a.default:9080",
        "svc-a.default.svc.cluster.local",
        "SVC-A",
    ] {
        let r = via(&p, host, "/x", &[]).await;
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("a"));
        // The upstream sees the name the caller used.
        assert_eq!(r.header("x-seen-host"), Some(host));
    }
    // HTTP proxy form, as an app with HTTP_PROXY=http://127.0.0.1:15001 sends it.
    let r = get_via_proxy(p.outbound, "http://svc-a:9080/proxied?q=1")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a GET /proxied?q=1\n");
    // A bare name only means a service of the proxy's own namespace.
    let r = via(&p, "other", "/", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-weft-error"), Some("no-route"));
    // curl with HTTP_PROXY, unmodified.
    if require_tool("curl") {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "http://svc-a:9080/curl"])
            .env("http_proxy", format!("http://{}", p.outbound))
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a GET /curl\n",
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn gateway_api_matching_and_precedence() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let d = Upstream::start("d").await;
    let mut yaml = String::new();
    for (n, u) in [("a", &a), ("b", &b), ("c", &c), ("d", &d)] {
        yaml.push_str(&backend(n, u));
    }
    yaml.push_str(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: shop}]
  hostnames: [shop.example.com, "*.shop.test"]
  rules:
    - backendRefs: [{name: a}]
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: b}]
    - matches: [{path: {type: PathPrefix, value: /api/v2}}]
      backendRefs: [{name: c}]
    - matches: [{path: {type: Exact, value: /api}}]
      backendRefs: [{name: d}]
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers: [{name: x-canary, value: "1"}]
        - path: {type: PathPrefix, value: /api}
          queryParams: [{type: RegularExpression, name: v, value: "[0-9]+"}]
        - path: {type: PathPrefix, value: /api}
          method: DELETE
      backendRefs: [{name: d}]
"#,
    );
    let p = Proxy::start(yaml);
    let who = |r: &Resp| r.header("x-upstream").unwrap_or("?").to_owned();
    assert_eq!(who(&via(&p, "shop", "/", &[]).await), "a");
    assert_eq!(
        who(&via(&p, "shop", "/apix", &[]).await),
        "a",
        "prefix matches whole segments"
    );
    assert_eq!(who(&via(&p, "shop", "/api/x", &[]).await), "b");
    assert_eq!(
        who(&via(&p, "shop", "/api/v2/x", &[]).await),
        "c",
        "longest prefix wins"
    );
    assert_eq!(who(&via(&p, "shop", "/api", &[]).await), "d", "exact wins");
    assert_eq!(
        who(&via(&p, "shop", "/api/x", &[("x-canary", "1")]).await),
        "d",
        "header match beats plain prefix"
    );
    assert_eq!(
        who(&via(&p, "shop", "/api/x?v=12", &[]).await),
        "d",
        "query param match"
    );
    assert_eq!(who(&via(&p, "shop", "/api/x?v=x", &[]).await), "b");
    assert_eq!(
        who(&via(&p, "shop.example.com", "/api/x", &[]).await),
        "b",
        "hostnames select the route"
    );
    assert_eq!(
        who(&via(&p, "eu.shop.test:8080", "/api/x", &[]).await),
        "b",
        "wildcard hostname"
    );
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let del = http::Request::delete("/api/x")
        .header("host", "shop")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(who(&conn.send(del).await.unwrap()), "d", "method match");
}

#[tokio::test]
async fn weighted_split_follows_weights() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let mut yaml = backend("v1", &v1);
    yaml.push_str(&backend("v2", &v2));
    yaml.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: reviews}]\n  rules:\n    - backendRefs: [{name: v1, weight: 80}, {name: v2, weight: 20}, {name: v2, weight: 0}]\n",
    );
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let mut counts: HashMap<String, u32> = HashMap::new();
    let n = 2000;
    for _ in 0..n {
        let req = http::Request::get("/")
            .header("host", "reviews")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let r = conn.send(req).await.unwrap();
        *counts
            .entry(r.header("x-upstream").unwrap().to_owned())
            .or_default() += 1;
    }
    let share = counts["v1"] as f64 / n as f64;
    // Binomial(2000, 0.8): sd ≈ 0.009; ±0.05 is over 5 sd.
    assert!(
        (0.75..=0.85).contains(&share),
        "v1 share {share} from {counts:?}"
    );
    assert_eq!(counts.values().sum::<u32>(), n);
}

#[tokio::test]
async fn filters_rewrite_redirect_and_headers() {
    let a = Upstream::start("a").await;
    let mut yaml = backend("a", &a);
    yaml.push_str(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: f}
spec:
  parentRefs: [{name: web}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
    - matches: [{path: {type: PathPrefix, value: /secure}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: web.example.com}
    - matches: [{path: {type: Exact, value: /inspect}}]
      filters:
        - type: URLRewrite
          urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /headers}}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-route, value: api}]
            add: [{name: x-extra, value: "2"}]
            remove: [x-debug]
      backendRefs: [{name: a}]
    - matches: [{path: {type: PathPrefix, value: /api}}]
      filters:
        - type: URLRewrite
          urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-route, value: api}]
            add: [{name: x-extra, value: "2"}]
            remove: [x-debug]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-served-by, value: weft}]
            remove: [x-seen-version]
      backendRefs: [{name: a}]
"#,
    );
    let p = Proxy::start(yaml);
    let r = via(&p, "web:8080", "/old/page?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://web:8080/new/page?x=1"));
    let r = via(&p, "web", "/secure/a", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://web.example.com/secure/a")
    );

    let r = via(
        &p,
        "web",
        "/api/items?id=7",
        &[("x-debug", "1"), ("x-extra", "1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a GET /v1/items?id=7\n");
    assert_eq!(r.header("x-seen-host"), Some("api.internal"));
    assert_eq!(r.header("x-served-by"), Some("weft"));
    assert!(r.header("x-seen-version").is_none());
    let r = via(&p, "web", "/inspect", &[("x-debug", "1"), ("x-extra", "1")]).await;
    let seen: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(seen["x-route"], "api");
    assert!(seen.get("x-debug").is_none());
    // Added to the client's own value (the JSON keeps the last of repeated names).
    assert_eq!(seen["x-extra"], "2");
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross() {
    let a = Upstream::start("a").await;
    let p = Proxy::start(backend("a", &a));
    let r = via(
        &p,
        "a",
        "/headers",
        &[
            ("connection", "keep-alive, x-private"),
            ("x-private", "s3cret"),
            ("proxy-authorization", "Basic x"),
            ("x-public", "ok"),
        ],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert!(seen.get("x-private").is_none(), "{seen}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen}");
    assert_eq!(seen["x-public"], "ok");
}

/// `RequestMirror` on an HTTPRoute: every answer comes from the real
/// backend; the mirror gets about its `percent` of copies, and a copy of
/// an upload arrives whole (the mirror answers 200 only to a whole body).
#[tokio::test]
async fn request_mirror_copies_a_share_of_requests() {
    let v1 = Upstream::start("v1").await;
    let shadow = Upstream::start("shadow").await;
    let mut yaml = backend("v1", &v1);
    yaml.push_str(&backend("shadow", &shadow));
    yaml.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: reviews}]\n  rules:\n    - matches: [{path: {value: /upload}}]\n      filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}]\n      backendRefs: [{name: v1}]\n    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}, percent: 50}}]\n      backendRefs: [{name: v1}]\n",
    );
    let p = Proxy::start(yaml);
    let n = 400;
    for _ in 0..n {
        let r = via(&p, "reviews", "/", &[]).await;
        assert_eq!(r.header("x-upstream"), Some("v1"));
    }
    assert_eq!(v1.requests(), n);
    let limit = std::time::Duration::from_secs(10);
    // The copies are sent on their own: wait until the mirror's metric
    // has counted every one the mirror received.
    let answered = |want: Option<usize>| {
        let p = &p;
        let shadow = &shadow;
        move || async move {
            let copies = p.metric("weft_requests_total", &["shadow", "2xx"]).await as usize;
            let done = copies == shadow.requests() && want.is_none_or(|w| copies == w);
            done.then_some(copies)
        }
    };
    let mirrored = eventually("the copies are answered", limit, answered(None)).await;
    // Binomial(400, 0.5): sd = 10; 150..=250 is 5 sd.
    assert!(
        (150..=250).contains(&mirrored),
        "{mirrored} of {n} mirrored"
    );

    // Uploads within the mirror's body bound (64 KiB) are copied whole;
    // larger ones reach the primary whole and are not copied.
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for size in [60_000, 200_000, 60_000, 200_000, 60_000] {
        let body = bytes::Bytes::from(vec![b'u'; size]);
        let req = http::Request::post("/upload")
            .header("host", "reviews")
            .body(http_body_util::Full::new(body))
            .unwrap();
        let r = conn.send(req).await.unwrap();
        assert_eq!(r.text(), size.to_string());
    }
    eventually(
        "the uploads' copies are answered",
        limit,
        answered(Some(mirrored + 3)),
    )
    .await;
    assert_eq!(
        p.metric("weft_mirrors_total", &["default/shadow", "skipped-body"])
            .await,
        2.0
    );
    assert_eq!(
        p.metric("weft_requests_total", &["shadow", "5xx"]).await,
        0.0
    );
}
