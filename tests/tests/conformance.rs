//! Hostile-input conformance of the proxy, request side: every case of
//! `weft_tests::conformance::request_cases` on every path, each asserting
//! the status the client got and the exact bytes the upstream received
//! (a test module).
//!
//! Each case has a Backend and recording upstream of its own, so the cases
//! run at once and nothing one leaves behind is seen by another.

use weft_tests::conformance::raw::Recorder;
use weft_tests::conformance::request_cases::{self, Expect};
use weft_tests::conformance::run::{judge, run};
use weft_tests::conformance::{response_cases, run_response};
use weft_tests::Proxy;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn request_side_cases() {
    let cases = request_cases::all();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let mut ups = Vec::new();
    let mut yaml = String::new();
    for i in 0..cases.len() {
        let up = Recorder::start(ANSWER).await;
        yaml.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: live{i}}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n---\n",
            up.addr
        ));
        ups.push(up);
    }
    let proxy = Proxy::start(yaml);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (case, up)) in cases.into_iter().zip(ups).enumerate() {
        let addr = proxy.outbound;
        tasks.spawn(async move {
            let host = format!("live{i}");
            let outcome = run(addr, &up, &case, &host).await;
            (case, up, host, outcome)
        });
    }
    let mut failures = Vec::new();
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (case, up, host, outcome) = r.expect("case task");
        if let Err(why) = judge(&case, &outcome, &host) {
            failures.push(format!(
                "{} [{:?}, {:?}]: {why}",
                case.name, case.class, case.path
            ));
        }
        done.push((case, up));
    }
    // Nothing of a refused case reaches its upstream later either.
    for (case, up) in &done {
        if matches!(case.expect, Expect::Refused | Expect::BodyRefused) {
            let late = up.requests().len();
            let warmup = usize::from(case.path == request_cases::Path::AfterHandoff);
            if late > warmup {
                failures.push(format!(
                    "{} [{:?}]: forwarded after all",
                    case.name, case.path
                ));
            }
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        done.len(),
        failures.join("\n")
    );
}

/// Every answer of `response_cases::ANSWERS` to every kind of client.
#[tokio::test]
async fn response_side_cases() {
    let mut cases = Vec::new();
    for answer in response_cases::ANSWERS {
        for client in response_cases::CLIENTS {
            cases.push((answer, *client));
        }
    }
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let mut ups = Vec::new();
    let mut yaml = String::new();
    for (i, (answer, _)) in cases.iter().enumerate() {
        let up = Recorder::start(answer.bytes).await;
        yaml.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: resp{i}}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n---\n",
            up.addr
        ));
        ups.push(up);
    }
    let proxy = Proxy::start(yaml);
    let mut tasks = tokio::task::JoinSet::new();
    let total = cases.len();
    for (i, (answer, client)) in cases.into_iter().enumerate() {
        let addr = proxy.outbound;
        tasks.spawn(async move {
            let r = run_response::run(addr, answer, client, &format!("resp{i}")).await;
            r.map_err(|e| format!("{} [{client:?}]: {e}", answer.name))
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("case task") {
            failures.push(e);
        }
    }
    drop(ups);
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// HTTP/2 requests (prior knowledge) whose authority or framing is in
/// doubt: the status (or stream error) the client got and the exact bytes
/// the HTTP/1.1 upstream received.
#[tokio::test]
async fn http2_request_cases() {
    use bytes::Bytes;
    use weft_tests::conformance::h2::exchange as h2_exchange;
    type Build = fn(&str) -> http::Request<Option<Bytes>>;
    let cases: Vec<(&str, Build, Option<&str>)> = vec![
        (
            "ordinary",
            |h| {
                http::Request::get(format!("http://{h}/a"))
                    .body(None)
                    .unwrap()
            },
            Some("GET /a HTTP/1.1\r\nhost: {h}\r\n\r\n"),
        ),
        (
            "Host same as :authority",
            |h| {
                http::Request::get(format!("http://{h}/a"))
                    .header("host", h)
                    .body(None)
                    .unwrap()
            },
            Some("GET /a HTTP/1.1\r\nhost: {h}\r\n\r\n"),
        ),
        (
            "Host differs from :authority",
            |h| {
                http::Request::get(format!("http://{h}/a"))
                    .header("host", "evil")
                    .body(None)
                    .unwrap()
            },
            None,
        ),
        (
            "two Host",
            |h| {
                http::Request::get(format!("http://{h}/a"))
                    .header("host", h)
                    .header("host", h)
                    .body(None)
                    .unwrap()
            },
            None,
        ),
        (
            ":authority with userinfo",
            |h| {
                http::Request::get(format!("http://u@{h}/a"))
                    .body(None)
                    .unwrap()
            },
            None,
        ),
        (
            ":scheme ftp",
            |h| {
                http::Request::get(format!("ftp://{h}/a"))
                    .body(None)
                    .unwrap()
            },
            None,
        ),
        (
            "lower-case method",
            |h| {
                http::Request::builder()
                    .method("get")
                    .uri(format!("http://{h}/a"))
                    .body(None)
                    .unwrap()
            },
            None,
        ),
        (
            "two Content-Length",
            |h| {
                http::Request::post(format!("http://{h}/a"))
                    .header("content-length", "3")
                    .header("content-length", "3")
                    .body(Some(Bytes::from_static(b"abc")))
                    .unwrap()
            },
            None,
        ),
        (
            "Content-Length longer than the data",
            |h| {
                http::Request::post(format!("http://{h}/a"))
                    .header("content-length", "5")
                    .body(Some(Bytes::from_static(b"abc")))
                    .unwrap()
            },
            None,
        ),
        (
            "Content-Length shorter than the data",
            |h| {
                http::Request::post(format!("http://{h}/a"))
                    .header("content-length", "1")
                    .body(Some(Bytes::from_static(b"abc")))
                    .unwrap()
            },
            None,
        ),
        (
            "body with Content-Length",
            |h| {
                http::Request::post(format!("http://{h}/a"))
                    .header("content-length", "3")
                    .body(Some(Bytes::from_static(b"abc")))
                    .unwrap()
            },
            Some("POST /a HTTP/1.1\r\ncontent-length: 3\r\nhost: {h}\r\n\r\nabc"),
        ),
    ];
    let mut ups = Vec::new();
    let mut yaml = String::new();
    for i in 0..cases.len() {
        let up = Recorder::start(ANSWER).await;
        yaml.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: two{i}}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n---\n",
            up.addr
        ));
        ups.push(up);
    }
    let proxy = Proxy::start(yaml);
    let mut failures = Vec::new();
    for (i, ((name, build, expect), up)) in cases.iter().zip(&ups).enumerate() {
        let host = format!("two{i}");
        let got = h2_exchange(proxy.outbound, vec![build(&host)])
            .await
            .remove(0);
        let forwarded: Vec<String> = up
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        match expect {
            None => {
                let refused = match &got {
                    Ok(r) => (400..500).contains(&r.status),
                    Err(_) => true,
                };
                if !refused || !forwarded.is_empty() {
                    failures.push(format!(
                        "{name}: not refused: {got:?}, upstream got {forwarded:?}"
                    ));
                }
            }
            Some(want) => {
                let want = want.replace("{h}", &host);
                let ok = matches!(&got, Ok(r) if r.status == 200);
                if !ok || forwarded != [want.clone()] {
                    failures.push(format!(
                        "{name}: {got:?}, upstream got {forwarded:?}, not {want:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same request cases through the inbound listener (to the local app),
/// one after another against one recording app. Nothing routes by
/// authority there, so each case's Host is just `live`.
#[tokio::test]
async fn request_side_cases_inbound() {
    let app = Recorder::start(ANSWER).await;
    let proxy = Proxy::builder(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: unused}\nspec:\n  endpoints: [{address: \"127.0.0.1:9\"}]\n",
    )
    .app(app.addr)
    .start();
    let mut failures = Vec::new();
    let cases = request_cases::all();
    for case in &cases {
        // Bytes that do not begin like an HTTP request are, on the inbound
        // port, a TCP client of the app (which AuthorizationPolicy's TCP
        // rules govern), so these two go through as bytes there.
        let first = case.path != request_cases::Path::AfterHandoff;
        if first && (case.request.starts_with(b"G@T") || case.request.starts_with(b"G\0T")) {
            continue;
        }
        app.clear();
        let outcome = run(proxy.inbound, &app, case, "live").await;
        if let Err(why) = judge(case, &outcome, "live") {
            failures.push(format!(
                "{} [{:?}, {:?}]: {why}",
                case.name, case.class, case.path
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed inbound:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
