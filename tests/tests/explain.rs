//! `weft-proxy explain` end to end: the real binary on the fixture config
//! of `tests/fixtures/explain/config/` (two HTTPRoutes on one host with
//! exact, prefix and regex paths, header, query and method matches that
//! overlap, a TrafficPolicy overriding some defaults, a Backend without
//! routes, an opaque-TCP Backend), for several requests. Each request's
//! stdout is compared with its golden file `tests/fixtures/explain/NAME.txt`,
//! and its exit code with the documented one. The same requests, with the
//! config taken from a real control plane serving the same files
//! (`--control-plane-admin`), must print the same bytes.
//!
//! After an intended change of the output, rewrite the goldens with
//! `WEFT_REGENERATE_GOLDEN=1 cargo test -p weft-tests --test explain` and
//! review the diff. The binaries are built by `cargo test --workspace`
//! (or `cargo build -p weft-proxy -p weft-control-plane`).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use weft_tests::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/explain")
}

/// (golden name, request flags, exit code).
const CASES: &[(&str, &[&str], i32)] = &[
    ("exact-path", &["http://reviews.shop:8080/api/health"], 0),
    (
        "header-match",
        &[
            "http://reviews.shop:8080/api/v2/items/1",
            "-H",
            "x-canary: 1",
        ],
        0,
    ),
    (
        "prefix-split-and-mirror",
        &["reviews.shop:8080/api/v2/items", "--header", "x-canary=0"],
        0,
    ),
    (
        "regex-after-prefix",
        &[
            "-X",
            "POST",
            "--host",
            "reviews.shop",
            "--path",
            "/api/v2/items/7",
        ],
        0,
    ),
    (
        "second-route-method-and-header",
        &[
            "-X",
            "POST",
            "http://reviews.shop/admin/users",
            "-H",
            "x-admin-token: 0a1b2c3d",
        ],
        0,
    ),
    (
        "second-route-query-and-rewrite",
        &["http://reviews.shop/admin/stats?view=1"],
        0,
    ),
    (
        "no-rule-matches",
        &[
            "-X",
            "PUT",
            "http://reviews.shop/admin/x",
            "-H",
            "x-admin-token: zz",
        ],
        1,
    ),
    ("no-host", &["http://reviewz.shop/"], 1),
    ("redirect", &["http://reviews.shop/legacy/x"], 0),
    (
        "second-match-of-a-rule",
        &["http://reviews.shop/old-admin"],
        0,
    ),
    (
        "grpc-service-and-method",
        &[
            "-X",
            "POST",
            "--host",
            "cart.shop:9090",
            "--path",
            "/shop.v1.Cart/Get",
        ],
        0,
    ),
    (
        "grpc-header-missing",
        &[
            "-X",
            "POST",
            "--host",
            "cart.shop:9090",
            "--path",
            "/shop.v2.Cart/Put",
        ],
        1,
    ),
    ("implicit-rule", &["http://ratings/x"], 0),
    ("opaque-tcp", &["db.shop:5432"], 1),
];

fn explain(source: &[String], request: &[&str]) -> Output {
    Command::new(proxy_bin())
        .arg("explain")
        .args(source)
        .args(request)
        .output()
        .expect("run weft-proxy explain")
}

fn files() -> Vec<String> {
    let config = fixtures().join("config");
    [
        "--config",
        &config.display().to_string(),
        "--namespace",
        "shop",
    ]
    .map(String::from)
    .into()
}

/// Compares `got` with golden `name` (or rewrites it, see the header).
fn check_golden(name: &str, got: &str) {
    let path = fixtures().join(format!("{name}.txt"));
    if std::env::var_os("WEFT_REGENERATE_GOLDEN").is_some() {
        assert!(
            std::env::var_os("CI").is_none(),
            "WEFT_REGENERATE_GOLDEN is refused under CI: goldens are compared, never rewritten there"
        );
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with WEFT_REGENERATE_GOLDEN=1",
            path.display()
        )
    });
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name}: the output differs from {} from line {} on:\n--- golden\n{}\n+++ now\n{}\nIf the change is intended, regenerate with WEFT_REGENERATE_GOLDEN=1 and review the diff.",
            path.display(),
            first + 1,
            want.lines().skip(first).take(8).collect::<Vec<_>>().join("\n"),
            got.lines().skip(first).take(8).collect::<Vec<_>>().join("\n"),
        );
    }
}

#[test]
fn golden_explanations_from_files() {
    for (name, request, code) in CASES {
        let out = explain(&files(), request);
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{name}: {stdout}\n{stderr}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
        check_golden(name, &stdout);
    }
}

/// The facts the goldens hold, checked apart from the layout, so a
/// regenerated golden cannot quietly lose them.
#[test]
fn explanations_say_why() {
    let run = |request: &[&str]| {
        let out = explain(&files(), request);
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let canary = run(CASES[1].1);
    assert!(
        canary.contains("selected: HTTPRoute shop/reviews rule 1 (canary) match 0"),
        "{canary}"
    );
    assert!(
        canary.contains("no: path /api/v2/items/1 does not start with /admin"),
        "{canary}"
    );
    assert!(canary.contains("no: method GET != POST"), "{canary}");
    assert!(
        canary.contains("matches too, but 6. comes first"),
        "{canary}"
    );
    for (setting, origin) in [
        ("request                3s", "route shop/reviews"),
        (
            "connect                250ms",
            "TrafficPolicy shop/reviews-v2",
        ),
        ("attempts               4", "route shop/reviews"),
        (
            "max requests           100",
            "TrafficPolicy shop/reviews-v2",
        ),
        ("max connections        10000", "default"),
    ] {
        let line = canary
            .lines()
            .find(|l| l.trim_start().starts_with(setting))
            .unwrap_or_else(|| panic!("{setting}: {canary}"));
        assert!(line.ends_with(origin), "{line}");
    }
    let split = run(CASES[2].1);
    assert!(
        split.contains("no: header x-canary is \"0\", not \"1\""),
        "{split}"
    );
    assert!(
        split.contains("shop/reviews-v1  weight 90     90%"),
        "{split}"
    );
    assert!(
        split.contains("mirror: shop/reviews-shadow, 25% of requests"),
        "{split}"
    );
    let none = run(CASES[6].1);
    assert!(
        none.contains(
            "nearest miss: 4. HTTPRoute shop/reviews-admin rule 0 match 0: method PUT != POST"
        ),
        "{none}"
    );
    assert!(run(CASES[7].1).contains("nearest miss: the name reviews.shop"));
}

#[test]
fn bad_input_exits_2_with_the_errors_check_gives() {
    let dir = TempDir::new("explain-bad");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRef: {kind: Backend, name: a}\n  retry: {attempts: many}\n",
    )
    .unwrap();
    let out = explain(
        &["--config".into(), bad.display().to_string()],
        &["http://a/"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let check = Command::new(proxy_bin())
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    let check_err = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(
        stderr.starts_with(&format!("{}:6:", bad.display())),
        "{stderr}"
    );
    assert_eq!(
        stderr, check_err,
        "explain and check report the same errors"
    );

    for request in [
        &["--header", "no separator", "http://reviews.shop/"][..],
        &["--method", "GE T", "http://reviews.shop/"],
        &["--host", "reviews.shop", "--path", "no-slash"],
        &["http://reviews.shop/", "--host", "reviews.shop"],
        &[],
    ] {
        let out = explain(&files(), request);
        assert_eq!(out.status.code(), Some(2), "{request:?}");
        assert!(out.stdout.is_empty(), "{request:?}");
        assert!(!out.stderr.is_empty(), "{request:?}");
    }
}

/// The control plane's view of a named proxy: every resource it could
/// see (no proxy has connected or asked for anything), and the same
/// explanation as from the files.
#[tokio::test]
async fn the_control_planes_view_explains_the_same() {
    let yaml = ["backends.yaml", "routes.yaml", "policies.yaml"]
        .map(|f| std::fs::read_to_string(fixtures().join("config").join(f)).unwrap())
        .join("\n---\n");
    let cp = ControlPlane::start(&yaml, &[]);
    let admin = format!("http://{}", cp.admin);
    let view = |proxy: &str| -> Vec<String> {
        ["--control-plane-admin", &admin, "--proxy", proxy]
            .map(String::from)
            .into()
    };
    for (name, request, code) in CASES {
        let out = explain(&view("shop/frontend"), request);
        let stdout = String::from_utf8(out.stdout).expect("UTF-8");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{name}: {stdout}\n{stderr}");
        let from_files = explain(&files(), request).stdout;
        assert_eq!(stdout, String::from_utf8(from_files).unwrap(), "{name}");
    }
    // Another namespace sees other names: a bare name is its own
    // namespace's, as with --namespace.
    let web = explain(&view("web/frontend"), &["http://reviews/api/health"]);
    assert_eq!(web.status.code(), Some(1));
    let web_files = explain(
        &[
            "--config".into(),
            fixtures().join("config").display().to_string(),
            "--namespace".into(),
            "web".into(),
        ],
        &["http://reviews/api/health"],
    );
    assert_eq!(web.stdout, web_files.stdout);

    // The admin path itself: YAML of every visible resource; bad queries refused.
    let r = get(
        &format!("{admin}/resources?namespace=shop&service=frontend"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/yaml");
    let text = r.text();
    for name in ["reviews-admin", "reviews-shadow", "ratings", "db"] {
        assert!(text.contains(&format!("name: {name},")), "{name}: {text}");
    }
    for bad in [
        "/resources",
        "/resources?namespace=Shop",
        "/resources?ns=shop",
    ] {
        let r = get(&format!("{admin}{bad}"), &[]).await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // An unreachable control plane is bad input too.
    let gone = explain(
        &view("shop/frontend")
            .into_iter()
            .map(|a| a.replace(&cp.admin.to_string(), "127.0.0.1:1"))
            .collect::<Vec<_>>(),
        &["http://reviews.shop/"],
    );
    assert_eq!(gone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("cannot connect"));
}

/// `request` as the client sends it: (method, authority, path and query,
/// headers), from the same flags explain reads.
fn wire_request(request: &[&str]) -> (String, String, String, Vec<(String, String)>) {
    let mut method = "GET".to_owned();
    let (mut host, mut path, mut url) = (None, "/".to_owned(), None);
    let mut headers = Vec::new();
    let mut args = request.iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a flag's value").to_string();
        match *a {
            "-X" | "--method" => method = value(),
            "--host" => host = Some(value()),
            "--path" => path = value(),
            "-H" | "--header" => {
                let h = value();
                let (k, v) = h.split_once(':').or_else(|| h.split_once('=')).unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            u => url = Some(u.to_owned()),
        }
    }
    if let Some(u) = url {
        let u = if u.contains("://") {
            u
        } else {
            format!("http://{u}")
        };
        let uri: http::Uri = u.parse().unwrap();
        host = Some(uri.authority().unwrap().to_string());
        path = uri.path_and_query().unwrap().to_string();
    }
    (method, host.unwrap(), path, headers)
}

/// A real proxy on the same config (its endpoints made real upstreams,
/// each answering with its Backend's name) does what explain says:
/// the selected rule's backend answers, and "no rule"/"no route" is a 404.
#[tokio::test]
async fn the_proxy_does_what_explain_says() {
    let mut yaml = ["backends.yaml", "routes.yaml", "policies.yaml"]
        .map(|f| std::fs::read_to_string(fixtures().join("config").join(f)).unwrap())
        .join("\n---\n");
    let mut upstreams = Vec::new();
    for (name, addr) in [
        ("reviews", "10.0.0.10:8080"),
        ("reviews-v1", "10.0.0.11:8080"),
        ("reviews-v2", "10.0.0.12:8080"),
        ("reviews-admin", "10.0.0.13:8080"),
        ("reviews-shadow", "10.0.0.14:8080"),
        ("ratings", "10.0.0.20:9080"),
        ("cart", "10.0.0.40:9090"),
    ] {
        let u = Upstream::start(name).await;
        yaml = yaml.replace(addr, &u.addr.to_string());
        upstreams.push(u);
    }
    let dir = TempDir::new("explain-real");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let proxy = Proxy::builder(yaml.clone())
        .arg("--namespace")
        .arg("shop")
        .start();
    let source: Vec<String> = [
        "--config",
        &config.display().to_string(),
        "--namespace",
        "shop",
    ]
    .map(String::from)
    .into();
    let mut checked = 0;
    for (name, request, code) in CASES.iter().filter(|c| c.0 != "opaque-tcp") {
        let out = explain(&source, request);
        assert_eq!(out.status.code(), Some(*code), "{name}");
        let text = String::from_utf8(out.stdout).unwrap();
        // The backends explain lists for the selected rule.
        let listed: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("backends"))
            .skip(1)
            .take_while(|l| l.starts_with("  shop/"))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|k| k.strip_prefix("shop/"))
            .collect();
        let (method, host, path, headers) = wire_request(request);
        let mut b = http::Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .header("host", host.as_str());
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = Conn::open(proxy.outbound)
            .await
            .unwrap()
            .send(req)
            .await
            .unwrap();
        match code {
            0 if text.contains("RequestRedirect:") => {
                assert_eq!(resp.status, 301, "{name}");
                assert!(resp.header("x-upstream").is_none(), "{name}");
            }
            0 => {
                let answered = resp.header("x-upstream").unwrap_or_default().to_owned();
                assert!(
                    listed.contains(&answered.as_str()),
                    "{name}: explain lists {listed:?}, {answered:?} answered ({})",
                    resp.status
                );
            }
            _ => {
                assert_eq!(resp.status, 404, "{name}");
                assert_eq!(resp.header("x-weft-error"), Some("no-route"), "{name}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, CASES.len() - 1);
}

/// With Kubernetes sources: the control plane's view of a proxy holds the
/// cluster's Services (as Backends), HTTPRoutes and TrafficPolicies, and
/// explain reads them like files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_resources_are_explained_too() {
    use serde_json::json;
    use weft_tests::kube_cluster::control_plane_rbac;
    use weft_tests::route_cluster::{fake_with, route, service};
    let fake = fake_with(control_plane_rbac(), true).await;
    service(&fake, "reviews", "10.1.0.1:8080".parse().unwrap()).await;
    service(&fake, "reviews-v2", "10.1.0.2:8080".parse().unwrap()).await;
    fake.create(route(
        "shop",
        "canary",
        None,
        json!([{"matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
            "backendRefs": [{"name": "reviews-v2", "port": 9080}]}]),
    ))
    .await;
    fake.create(
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "v2", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Service", "name": "reviews-v2"}, "connectTimeout": "2s"}}),
    )
    .await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let source: Vec<String> = [
        "--control-plane-admin",
        &format!("http://{}", cp.admin),
        "--proxy",
        "web/frontend",
    ]
    .map(String::from)
    .into();
    let canary = ["http://reviews.shop:9080/x", "-H", "x-canary: 1"];
    // The control plane lists the cluster before it serves; the policy
    // may still be on its way.
    let text = eventually(
        "explain sees the route and the policy",
        Duration::from_secs(20),
        || {
            let out = explain(&source, &canary);
            let text = String::from_utf8(out.stdout).unwrap();
            let done = out.status.code() == Some(0)
                && text.contains("selected: HTTPRoute shop/canary rule 0 match 0")
                && text.contains("TrafficPolicy shop/v2");
            async move { done.then_some(text) }
        },
    )
    .await;
    let connect = text
        .lines()
        .find(|l| l.trim_start().starts_with("connect "))
        .unwrap();
    assert!(
        connect.contains("2s") && connect.ends_with("TrafficPolicy shop/v2"),
        "{text}"
    );
    assert!(
        text.contains("shop/reviews-v2  weight 1      100%"),
        "{text}"
    );
    let miss = explain(&source, &["http://reviews.shop:9080/x"]);
    assert_eq!(miss.status.code(), Some(1));
    let miss = String::from_utf8(miss.stdout).unwrap();
    assert!(
        miss.contains(
            "nearest miss: 1. HTTPRoute shop/canary rule 0 match 0: header x-canary missing"
        ),
        "{miss}"
    );
}
