//! Golden tests: each AdmissionReview in `tests/fixtures/inject/*.review.json`
//! (and the one recorded from a real API server,
//! `tests/fixtures/k8s/admission/04-admissionreview-request.raw.json`) is
//! answered by the webhook, and the answer, with its patch decoded, must
//! equal `<case>.golden.json`. A difference fails with a line diff.
//!
//! To regenerate after an intended change, run
//! `WEFT_REGENERATE_GOLDEN=1 cargo test -p weft-control-plane inject::golden`
//! and review the diff of the `.golden.json` files before committing; it is
//! refused when `CI` is set, so CI only ever compares.

use super::settings::Settings;
use super::webhook::answer;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where the fixtures live.
pub(super) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The injector as the tests configure it (fixed values, so the goldens
/// do not change with the crate version or a generated CA).
pub(super) fn settings() -> Settings {
    let ca_pem = std::fs::read_to_string(fixtures().join("inject/ca.pem")).expect("ca.pem");
    let args = super::settings::InjectorArgs {
        webhook: None,
        proxy_image: "ghcr.io/weft-mesh/weft:0.1.0".into(),
        proxy_cpu: "50m".into(),
        proxy_memory: "64Mi".into(),
        proxy_cpu_limit: None,
        proxy_memory_limit: "256Mi".into(),
        proxy_control_plane: None,
        ca_bundle_interval: std::time::Duration::from_secs(30),
    };
    let mut s = args
        .settings("weft-system", "weft.local", &ca_pem)
        .expect("settings");
    s.version = "0.1.0".into();
    s
}

/// The webhook's answer to `review`, its patch decoded: `{"response":
/// ..., "patch": [...] | null}`.
pub(super) fn decoded_answer(review: &Value) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let mut out = answer(&body, &settings()).expect("an AdmissionReview answer");
    let mut response = out["response"].take();
    let response = response.as_object_mut().expect("response");
    let patch = match response.remove("patch") {
        Some(Value::String(b64)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64 patch");
            serde_json::from_slice(&bytes).expect("JSON patch")
        }
        None => Value::Null,
        Some(other) => panic!("patch is not a string: {other}"),
    };
    json!({"apiVersion": out["apiVersion"], "kind": out["kind"], "response": response, "patch": patch})
}

/// Applies an RFC 6902 patch (add, replace, remove, test) to `doc`, as an
/// API server does; an operation that does not apply is an error.
pub(super) fn apply(doc: &Value, ops: &Value) -> Result<Value, String> {
    let mut doc = doc.clone();
    for op in ops.as_array().ok_or("the patch is not an array")? {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        let segs: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = segs.split_last().ok_or("empty path")?;
        let mut parent = &mut doc;
        for s in parents {
            parent = match parent {
                Value::Object(m) => m.get_mut(s),
                Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| format!("{path}: no parent {s}"))?;
        }
        let value = op["value"].clone();
        match (op["op"].as_str(), parent) {
            (Some("add" | "replace"), Value::Object(m)) => {
                if op["op"] == "replace" && !m.contains_key(last) {
                    return Err(format!("{path}: replace of a missing member"));
                }
                m.insert(last.clone(), value);
            }
            (Some("add"), Value::Array(a)) => {
                let i = if last == "-" {
                    a.len()
                } else {
                    last.parse().map_err(|_| path)?
                };
                if i > a.len() {
                    return Err(format!("{path}: index out of range"));
                }
                a.insert(i, value);
            }
            (Some("replace"), Value::Array(a)) => {
                let i: usize = last.parse().map_err(|_| path)?;
                *a.get_mut(i).ok_or(path)? = value;
            }
            (Some("test"), p) => {
                let at = match p {
                    Value::Object(m) => m.get(last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                if at != Some(&value) {
                    return Err(format!("{path}: test failed"));
                }
            }
            (op, _) => return Err(format!("{path}: cannot apply {op:?}")),
        }
    }
    Ok(doc)
}

/// A line diff of `want` and `got` (`-` want, `+` got), for failures.
fn diff(want: &str, got: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("{:>4} - {}\n", i + 1, a[i]);
            i += 1;
        } else {
            out += &format!("{:>4} + {}\n", j + 1, b[j]);
            j += 1;
        }
    }
    out
}

/// Compares `got` with the golden file `name` (or rewrites it, see the
/// module header).
fn check_golden(name: &str, got: &Value) {
    let path = fixtures()
        .join("inject")
        .join(format!("{name}.golden.json"));
    let got = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var_os("WEFT_REGENERATE_GOLDEN").is_some() {
        assert!(
            std::env::var_os("CI").is_none(),
            "WEFT_REGENERATE_GOLDEN is refused under CI: goldens are compared, never rewritten there"
        );
        std::fs::write(&path, &got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with WEFT_REGENERATE_GOLDEN=1 (see golden_tests.rs)",
            path.display()
        )
    });
    if want != got {
        panic!(
            "{name}: the webhook's answer differs from {} (- golden, + now):\n{}\nIf the change is intended, regenerate with WEFT_REGENERATE_GOLDEN=1 and review the diff.",
            path.display(),
            diff(&want, &got)
        );
    }
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every case: its golden, and for an injected Pod, that the patch applies
/// to it and a second injection of the result changes nothing.
#[test]
fn golden_patches() {
    let dir = fixtures().join("inject");
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("fixtures/inject")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".review.json")?
                .to_string();
            Some((name, p))
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "cases missing in {}", dir.display());
    cases.push((
        "recorded-api-server".into(),
        fixtures().join("k8s/admission/04-admissionreview-request.raw.json"),
    ));
    for (name, path) in cases {
        let review = read(&path);
        let got = decoded_answer(&review);
        check_golden(&name, &got);
        assert_eq!(got["response"]["uid"], review["request"]["uid"], "{name}");
        if got["patch"].is_null() {
            continue;
        }
        let pod = apply(&review["request"]["object"], &got["patch"]).unwrap_or_err_panic(&name);
        let mut again = review.clone();
        again["request"]["object"] = pod;
        let second = decoded_answer(&again);
        assert_eq!(second["response"]["allowed"], true, "{name}");
        assert!(
            second["patch"].is_null(),
            "{name}: injected twice: {second}"
        );
    }
}

trait OrPanic<T> {
    fn unwrap_or_err_panic(self, case: &str) -> T;
}

impl<T> OrPanic<T> for Result<T, String> {
    fn unwrap_or_err_panic(self, case: &str) -> T {
        self.unwrap_or_else(|e| panic!("{case}: the patch does not apply: {e}"))
    }
}

#[test]
fn the_diff_names_changed_lines() {
    let d = diff("a\nb\nc\n", "a\nx\nc\nd\n");
    assert_eq!(d, "   2 - b\n   2 + x\n   4 + d\n");
}

#[test]
fn malformed_reviews_get_a_reason_and_odd_ones_are_answered() {
    let s = settings();
    for (body, want) in [
        (&b"not json"[..], "not an AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1","request":{"uid":"u"}}"#, "not an admission.k8s.io/v1 AdmissionReview"),
        (br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{}}"#, "no request.uid"),
        (br#"[1,2]"#, "not an admission.k8s.io/v1 AdmissionReview"),
    ] {
        let e = answer(body, &s).expect_err(want);
        assert!(e.contains(want), "{e}");
    }
    let review = |request: Value| {
        let mut r = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"});
        r["request"] = request;
        serde_json::to_vec(&r).unwrap()
    };
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    // No object: refused with a message.
    let a = answer(
        &review(json!({"uid": "u1", "kind": pod_kind, "operation": "CREATE"})),
        &s,
    )
    .unwrap();
    assert_eq!(a["response"]["allowed"], false);
    assert_eq!(a["response"]["uid"], "u1");
    assert!(a["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("carries no Pod"));
    // A Pod without containers: refused.
    let a = answer(
        &review(json!({"uid": "u2", "kind": pod_kind, "operation": "CREATE",
        "object": {"metadata": {"name": "p"}, "spec": {"containers": "x"}}})),
        &s,
    )
    .unwrap();
    assert_eq!(a["response"]["allowed"], false, "{a}");
    // Another kind, or an UPDATE: allowed unchanged.
    for request in [
        json!({"uid": "u3", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "operation": "CREATE", "object": {}}),
        json!({"uid": "u4", "kind": pod_kind, "operation": "UPDATE", "object": {"spec": {"containers": []}}}),
    ] {
        let a = answer(&review(request), &s).unwrap();
        assert_eq!(a["response"]["allowed"], true, "{a}");
        assert!(a["response"].get("patch").is_none(), "{a}");
    }
    // Odd values in annotations and probes never panic.
    let a = answer(&review(json!({"uid": "u5", "kind": pod_kind, "operation": "CREATE",
        "object": {"metadata": {"annotations": {"weft.dev/proxy-cpu": 5, "weft.dev/skip-inbound-ports": "80,x"}},
                   "spec": {"containers": [{"name": 7, "readinessProbe": {"httpGet": []}}]}}})), &s).unwrap();
    let message = a["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("weft.dev/proxy-cpu") && message.contains("weft.dev/skip-inbound-ports"),
        "{message}"
    );
}
