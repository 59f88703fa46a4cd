//! OpenTelemetry traces, end to end: sidecars export over OTLP (gRPC and
//! HTTP/protobuf) to a real receiver (`peers/otlp_receiver.py`, the
//! OpenTelemetry project's protobuf definitions with grpcio), and the test
//! reads back what it decoded: one trace across two sidecars with the
//! caller's trace id, parent/child links and the HTTP semantic-convention
//! attributes; W3C and B3 propagation and sampling; retry and ejection
//! events; spans that last as long as their response. Where traces go and
//! what a failing collector costs: `tracing_delivery.rs`.

use std::time::Duration;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_tests::client::Conn;
use weft_tests::mesh::{mint, with_identity};
use weft_tests::otlp::*;
use weft_tests::*;

const FRONTEND: &str = "spiffe://weft.local/ns/default/sa/frontend";
const REVIEWS: &str = "spiffe://weft.local/ns/default/sa/reviews";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// frontend's sidecar → (mTLS) → reviews' sidecar → app: one trace, the
/// caller's, with a client span under the caller's span and a server span
/// under the client span, each with its attributes; the app gets the server
/// span as its parent.
async fn two_sidecars_make_one_trace(protocol: &str, via: &str) {
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = Upstream::start("reviews-app").await;
    let b_dir = mint(&ca, &ca, REVIEWS);
    let b = with_env(
        with_identity(Proxy::builder(backend("unused", &[], "")), &b_dir),
        &rx.env(protocol),
    )
    .app(app.addr)
    .arg("--service")
    .arg("reviews")
    .start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let mut env = rx.env(protocol);
    env.push(("OTEL_SERVICE_NAME".into(), "frontend-sidecar".into()));
    // Sent with every export, percent-decoded.
    env.push((
        "OTEL_EXPORTER_OTLP_HEADERS".into(),
        "x-tenant=team%20a".into(),
    ));
    let ep = format!("{{address: \"{}\", identity: \"{REVIEWS}\"}}", b.inbound);
    let a = with_env(
        with_identity(Proxy::builder(backend("reviews", &[ep], "")), &a_dir),
        &env,
    )
    .start();

    let mut c = Conn::open(a.outbound).await.unwrap();
    let parent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = within(
        "request",
        c.send(request(
            "reviews:8080",
            "/headers",
            &[("traceparent", &parent), ("tracestate", "app=1")],
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = headers_json(&r);

    let client = rx
        .span("frontend's client span", |s| {
            s["kind"] == "SPAN_KIND_CLIENT"
        })
        .await;
    let server = rx
        .span("reviews' server span", |s| s["kind"] == "SPAN_KIND_SERVER")
        .await;
    // One trace: the caller's.
    assert_eq!(client["trace_id"], CALLER_TRACE, "{client}");
    assert_eq!(server["trace_id"], CALLER_TRACE, "{server}");
    assert_eq!(client["parent_span_id"], CALLER_SPAN, "{client}");
    assert_eq!(server["parent_span_id"], client["span_id"], "{server}");
    // The app sees the server span as its parent, and the caller's tracestate.
    let sid = server["span_id"].as_str().unwrap();
    assert_eq!(
        seen["traceparent"],
        format!("00-{CALLER_TRACE}-{sid}-01"),
        "{seen}"
    );
    assert_eq!(seen["tracestate"], "app=1", "{seen}");
    // Who sent them, and how.
    assert_eq!(client["via"], via);
    assert_eq!(client["tenant"], "team a", "{client}");
    assert_eq!(server["via"], via);
    assert_eq!(client["service"], "frontend-sidecar", "{client}");
    assert_eq!(server["service"], "reviews", "{server}");
    assert_eq!(
        server["resource"]["service.namespace"], "default",
        "{server}"
    );
    assert_eq!(client["scope"], "weft-proxy");
    assert_eq!(client["scope_version"], env!("CARGO_PKG_VERSION"));
    // Sampled, and whether the parent was remote: the caller's span came
    // from another process; the server span's parent, the client span, too.
    assert_eq!(client["flags"], 0x301, "{client}");
    assert_eq!(server["flags"], 0x301, "{server}");
    assert_eq!(
        server["resource"]["telemetry.sdk.language"], "rust",
        "{server}"
    );
    assert_eq!(client["name"], "GET");
    // Semantic-convention attributes.
    let ca_ = &client["attributes"];
    assert_eq!(ca_["http.request.method"], "GET", "{client}");
    assert_eq!(ca_["http.response.status_code"], 200, "{client}");
    assert_eq!(ca_["server.address"], "reviews", "{client}");
    assert_eq!(ca_["server.port"], 8080, "{client}");
    assert_eq!(ca_["url.full"], "http://reviews:8080/headers", "{client}");
    assert_eq!(ca_["network.peer.address"], "127.0.0.1", "{client}");
    assert_eq!(ca_["network.peer.port"], b.inbound.port(), "{client}");
    assert_eq!(ca_["weft.peer.identity"], REVIEWS, "{client}");
    assert_eq!(ca_["weft.backend"], "default/reviews", "{client}");
    assert!(ca_.get("http.request.resend_count").is_none(), "{client}");
    assert_eq!(client["status"], "STATUS_CODE_UNSET", "{client}");
    let sa = &server["attributes"];
    assert_eq!(sa["http.request.method"], "GET", "{server}");
    assert_eq!(sa["http.response.status_code"], 200, "{server}");
    assert_eq!(sa["url.path"], "/headers", "{server}");
    assert_eq!(sa["network.protocol.version"], "2", "{server}");
    assert_eq!(sa["weft.peer.identity"], FRONTEND, "{server}");
    assert_eq!(sa["client.address"], "127.0.0.1", "{server}");
    // The server span lies within the client span.
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    assert!(
        n(&client, "start") <= n(&server, "start"),
        "{client}\n{server}"
    );
    assert!(n(&server, "end") <= n(&client, "end"), "{client}\n{server}");
    // Exactly these two spans for this trace.
    let ours = rx
        .all()
        .into_iter()
        .filter(|s| s["trace_id"] == CALLER_TRACE)
        .count();
    assert_eq!(ours, 2, "{:#?}", rx.all());
    // The receiver prints a batch before it answers the export: the
    // counter moves once the answer is in.
    eventually("the export counted", STEP, || async {
        (a.metric("weft_trace_spans_exported_total", &[]).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(a.metric("weft_trace_spans_dropped_total", &[]).await, 0.0);
}

#[tokio::test]
async fn two_sidecars_make_one_trace_over_otlp_grpc() {
    two_sidecars_make_one_trace("grpc", "grpc").await;
}

#[tokio::test]
async fn two_sidecars_make_one_trace_over_otlp_http_protobuf() {
    two_sidecars_make_one_trace("http/protobuf", "http").await;
}

/// W3C and B3 (single and multi) contexts are continued and passed on in
/// the caller's style; a sampled-out parent is followed and passed on as
/// such; a request with no context starts a trace only if the sampler
/// says so (here: never, `parentbased_traceidratio` at 0).
#[tokio::test]
async fn propagation_and_sampling() {
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let app = Upstream::start("app").await;
    let mut env = rx.env("http/protobuf");
    env.push((
        "OTEL_TRACES_SAMPLER".into(),
        "parentbased_traceidratio".into(),
    ));
    env.push(("OTEL_TRACES_SAMPLER_ARG".into(), "0".into()));
    let ep = format!("{{address: \"{}\"}}", app.addr);
    let p = with_env(Proxy::builder(backend("app", &[ep], "")), &env).start();
    let mut c = Conn::open(p.outbound).await.unwrap();

    // No context: the root sampler says no. The app gets an unsampled parent.
    let seen = send(&mut c, &[]).await;
    let tp = seen["traceparent"].as_str().expect("traceparent sent on");
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    let unsampled_root = tp[3..35].to_owned();

    // A sampled-out W3C parent: followed, and passed on unsampled.
    let out_trace = "11111111111111111111111111111111";
    let seen = send(
        &mut c,
        &[(
            "traceparent",
            &format!("00-{out_trace}-2222222222222222-00"),
        )],
    )
    .await;
    let tp = seen["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{out_trace}-")) && tp.ends_with("-00"),
        "{tp}"
    );

    // B3 single, sampled: a span in that trace; the app gets b3 and traceparent.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let seen = send(&mut c, &[("b3", &format!("{b3_trace}-e457b5a2e4d86bd1-1"))]).await;
    let s = rx
        .span("span of the b3 trace", |s| s["trace_id"] == b3_trace)
        .await;
    assert_eq!(s["parent_span_id"], "e457b5a2e4d86bd1", "{s}");
    let sid = s["span_id"].as_str().unwrap();
    assert_eq!(seen["b3"], format!("{b3_trace}-{sid}-1"), "{seen}");
    assert_eq!(
        seen["traceparent"],
        format!("00-{b3_trace}-{sid}-01"),
        "{seen}"
    );

    // B3 multi with a 64-bit trace id: padded, continued, passed on as multi.
    let seen = send(
        &mut c,
        &[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "05e3ac9a4f6e3b90"),
            ("x-b3-parentspanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let padded = "000000000000000064fe8b2a57d3eff7";
    let s = rx
        .span("span of the b3 multi trace", |s| s["trace_id"] == padded)
        .await;
    assert_eq!(s["parent_span_id"], "05e3ac9a4f6e3b90", "{s}");
    assert_eq!(seen["x-b3-traceid"], padded, "{seen}");
    assert_eq!(seen["x-b3-spanid"], s["span_id"], "{seen}");
    assert_eq!(seen["x-b3-sampled"], "1", "{seen}");
    assert!(seen.get("x-b3-parentspanid").is_none(), "{seen}");

    // Spans leave in order: the two unsampled requests, sent before the B3
    // ones, would have arrived by now. None did.
    let all = rx.all();
    assert!(
        all.iter()
            .all(|s| s["trace_id"] != unsampled_root && s["trace_id"] != out_trace),
        "{all:#?}"
    );
    assert_eq!(all.len(), 2, "{all:#?}");
}

/// A try that fails and is retried elsewhere shows as span events: the
/// endpoint's ejection and the retry, with the resend count on the span.
#[tokio::test]
async fn retries_and_ejections_are_span_events() {
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let app = Upstream::start("app").await;
    // Nothing listens on the first endpoint: its connect is refused.
    let eps = [
        "{address: \"127.0.0.1:1\"}".to_owned(),
        format!("{{address: \"{}\"}}", app.addr),
    ];
    let policy = "  loadBalancer: {policy: RoundRobin}\n  retry: {attempts: 2, retryOn: [connect-failure], backoff: {baseInterval: 1ms, maxInterval: 2ms}}\n  outlierDetection: {consecutiveFailures: 1, maxEjectionPercent: 100, baseEjectionTime: 30s}\n";
    let p = with_env(
        Proxy::builder(backend("flaky", &eps, policy)),
        &rx.env("grpc"),
    )
    .start();
    let mut c = Conn::open(p.outbound).await.unwrap();
    // Round robin: one of two requests goes to the dead endpoint first.
    for _ in 0..2 {
        let r = within("request", c.send(request("flaky:8080", "/", &[])))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let s = rx
        .span("the retried request's span", |s| {
            s["attributes"]["http.request.resend_count"] == 1
        })
        .await;
    let names: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["endpoint ejected", "retry"], "{s}");
    let retry = &s["events"][1]["attributes"];
    assert_eq!(retry["weft.retry.reason"], "connect-failed", "{s}");
    assert_eq!(retry["network.peer.address"], "127.0.0.1", "{s}");
    assert_eq!(retry["network.peer.port"], 1, "{s}");
    assert_eq!(retry["http.request.resend_count"], 1, "{s}");
    assert_eq!(s["events"][0]["attributes"]["network.peer.port"], 1, "{s}");
    // The span ends on the endpoint that answered.
    assert_eq!(s["attributes"]["network.peer.port"], app.addr.port(), "{s}");
    assert_eq!(s["status"], "STATUS_CODE_UNSET", "{s}");
}

/// A span lasts as long as its response: a streamed body (server-sent
/// events) keeps it open to the last event, and a request abandoned by its
/// client before any answer still ends its span, as cancelled.
#[tokio::test]
async fn spans_end_with_the_body_and_abandoned_requests_are_cancelled() {
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let app = Upstream::start("app").await;
    let ep = format!("{{address: \"{}\"}}", app.addr);
    let p = with_env(Proxy::builder(backend("app", &[ep], "")), &rx.env("grpc")).start();

    // Five events 40 ms apart: the head comes at once, the body over 160 ms.
    let mut c = Conn::open(p.outbound).await.unwrap();
    let r = within("sse", c.send(request("app:8080", "/sse/5/40", &[])))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().matches("data: event").count(), 5, "{}", r.text());
    let s = rx
        .span("the stream's span", |s| {
            s["attributes"]["url.full"] == "http://app:8080/sse/5/40"
        })
        .await;
    let took_ms = (s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap()) / 1_000_000;
    assert!(
        took_ms >= 150,
        "span of {took_ms} ms for a 160 ms stream: {s}"
    );

    // The client gives up on a slow answer and closes its connection.
    let mut c = Conn::open(p.outbound).await.unwrap();
    let slow = tokio::time::timeout(
        Duration::from_millis(200),
        c.send(request("app:8080", "/delay/3000", &[])),
    )
    .await;
    assert!(slow.is_err(), "the delayed answer came early");
    drop(c);
    let s = rx
        .span("the abandoned request's span", |s| {
            s["attributes"]["error.type"] == "cancelled"
        })
        .await;
    assert_eq!(s["kind"], "SPAN_KIND_CLIENT", "{s}");
    assert_eq!(s["attributes"]["http.request.method"], "GET", "{s}");
    let took_ms = (s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap()) / 1_000_000;
    assert!(
        took_ms < 3000,
        "ended when abandoned, not when answered: {s}"
    );
}
