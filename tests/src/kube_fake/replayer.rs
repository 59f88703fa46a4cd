//! The replay driver for `tests/tests/kube_fake_wire.rs`: sends each
//! recorded request to a fake, with the run-dependent values substituted
//! (`replay::Substitutions`), compares the answer's shape
//! (`replay::shape_diff`), replays watches while running what the recorder
//! did during them, and reports every difference at the end.

use super::replay::{shape_diff, Substitutions};
use super::{fixtures_dir, Credentials, FakeClient, FakeResponse, KubeFake};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;

pub fn fixture(rel: &str) -> Value {
    let path = fixtures_dir().join(format!("{rel}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files of a folder in name order, without the `.json`.
pub fn folder_files(folder: &str) -> Vec<String> {
    let dir = fixtures_dir().join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(|s| format!("{folder}/{s}")))
        .collect();
    names.sort();
    names
}

/// Response headers compared by value.
const HEADERS: &[&str] = &[
    "Cache-Control",
    "Vary",
    "Retry-After",
    "Warning",
    "X-Content-Type-Options",
];

pub struct Replay {
    pub fake: KubeFake,
    pub subs: Substitutions,
    pub failures: Vec<String>,
    pub replayed: Vec<String>,
}

impl Replay {
    pub async fn new() -> Replay {
        let fake = KubeFake::builder()
            .config(|c| {
                c.bookmark_interval = Duration::from_secs(1);
                c.future_rv_wait = Duration::from_millis(500);
            })
            .start()
            .await;
        Replay {
            fake,
            subs: Substitutions::default(),
            failures: Vec::new(),
            replayed: Vec::new(),
        }
    }

    fn client(&self, req: &Value) -> FakeClient {
        let auth = req["auth"].as_str().unwrap_or("");
        let bearer = req["headers"]["Authorization"]
            .as_str()
            .and_then(|h| h.strip_prefix("Bearer "));
        let creds = match bearer {
            _ if auth.starts_with("TLS client certificate") => Credentials::Admin,
            Some(t) => Credentials::Bearer(self.subs.string(t)),
            None => Credentials::None,
        };
        self.fake.client(creds)
    }

    fn headers(&self, req: &Value) -> Vec<(String, String)> {
        req["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "Authorization")
            .map(|(k, v)| (k.clone(), self.subs.string(v.as_str().unwrap_or(""))))
            .collect()
    }

    fn body(&self, req: &Value) -> Bytes {
        match &req["body"] {
            Value::Null => Bytes::new(),
            Value::String(s) => Bytes::from(s.clone()),
            v => Bytes::from(self.subs.value(v).to_string()),
        }
    }

    pub fn fail(&mut self, rel: &str, what: String) {
        self.failures.push(format!("{rel}: {what}"));
    }

    /// Replays one exchange and compares the answer.
    pub async fn send(&mut self, rel: &str) -> FakeResponse {
        let fx = fixture(rel);
        let req = &fx["request"];
        let headers = self.headers(req);
        let hdrs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let path = self.subs.path(req["path"].as_str().unwrap_or(""));
        let method = req["method"].as_str().unwrap_or("GET");
        let resp = self
            .client(req)
            .send(method, &path, &hdrs, self.body(req))
            .await
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        self.compare(rel, &fx["response"], &resp);
        self.replayed.push(rel.to_string());
        resp
    }

    fn compare(&mut self, rel: &str, rec: &Value, resp: &FakeResponse) {
        let code = rec["status"].as_u64().unwrap_or(0) as u16;
        if resp.status != code {
            let body = String::from_utf8_lossy(&resp.body)
                .chars()
                .take(300)
                .collect::<String>();
            self.fail(
                rel,
                format!("status {} (recorded {code}): {body}", resp.status),
            );
            return;
        }
        // Headers a client may act on must be there with the recorded value
        // (and absent when the recording has none).
        for h in HEADERS {
            let recorded = rec["headers"][*h].as_str();
            let actual = resp.headers.get(*h).and_then(|v| v.to_str().ok());
            if recorded != actual {
                self.fail(
                    rel,
                    format!("header {h}: {actual:?} (recorded {recorded:?})"),
                );
            }
        }
        let rec_ct = rec["headers"]["Content-Type"].as_str();
        if resp.content_type() != rec_ct {
            self.fail(
                rel,
                format!(
                    "content type {:?} (recorded {rec_ct:?})",
                    resp.content_type()
                ),
            );
        }
        if let (Some(r), Some(a)) = (rec["headers"]["Etag"].as_str(), resp.headers.get("etag")) {
            self.subs.insert(r, a.to_str().unwrap_or(""));
        }
        match &rec["body"] {
            Value::String(s) => {
                if resp.body != s.as_bytes() {
                    self.fail(
                        rel,
                        format!(
                            "body {:?} (recorded {s:?})",
                            String::from_utf8_lossy(&resp.body)
                        ),
                    );
                }
            }
            body => {
                let actual = resp.json();
                if !resp.body.ends_with(b"}\n") || resp.body[..resp.body.len() - 1].contains(&b'\n')
                {
                    self.fail(rel, "body is not compact JSON and one newline".into());
                }
                for d in shape_diff(body, &actual) {
                    self.fail(rel, d);
                }
                self.subs.learn(body, &actual);
            }
        }
    }

    /// Replays a watch: opens it, runs `during` (fixtures replayed while it
    /// is open, or a label patch the recorder made without a fixture), reads
    /// until the server ends it, and compares the events.
    pub async fn watch(&mut self, rel: &str, timeout: u64, during: During) {
        let fx = fixture(rel);
        let req = &fx["request"];
        let headers = self.headers(req);
        let hdrs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut path = self.subs.path(req["path"].as_str().unwrap_or(""));
        for t in ["100", "10", "5"] {
            path = path.replace(
                &format!("timeoutSeconds={t}"),
                &format!("timeoutSeconds={timeout}"),
            );
        }
        let mut stream = self
            .client(req)
            .stream("GET", &path, &hdrs)
            .await
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        let rec = &fx["response"];
        if stream.status != 200
            || stream
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                != rec["headers"]["Content-Type"].as_str()
        {
            self.fail(
                rel,
                format!(
                    "watch answered {} {:?}",
                    stream.status,
                    stream.headers.get("content-type")
                ),
            );
        }
        if stream.headers.get("content-length").is_some() {
            self.fail(rel, "a watch must not have a Content-Length".into());
        }
        match during {
            During::Fixtures(list) => {
                for f in list {
                    Box::pin(self.send(f)).await;
                }
            }
            During::LabelPatch(name) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.fake
                    .merge_patch(
                        "discovery.k8s.io/v1",
                        "EndpointSlice",
                        Some("shop"),
                        name,
                        None,
                        json!({"metadata": {"labels": {"touched": "yes"}}}),
                    )
                    .await;
            }
            During::Nothing => {}
        }
        let mut events = Vec::new();
        while let Some(line) = stream.next_line(Duration::from_secs(timeout + 5)).await {
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => events.push(v),
                Err(e) => self.fail(rel, format!("event line is not JSON ({e}): {line}")),
            }
        }
        let recorded: Vec<Value> = fx["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["event"].clone())
            .collect();
        let split = |evs: &[Value]| -> (Vec<Value>, Vec<Value>) {
            evs.iter().cloned().partition(|e| e["type"] == "BOOKMARK")
        };
        let (rec_b, rec_o) = split(&recorded);
        let (act_b, act_o) = split(&events);
        let types = |evs: &[Value]| {
            evs.iter()
                .map(|e| e["type"].as_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
        };
        if types(&rec_o) != types(&act_o) {
            self.fail(
                rel,
                format!("events {:?} (recorded {:?})", types(&act_o), types(&rec_o)),
            );
        }
        for (r, a) in rec_o.iter().zip(&act_o) {
            for d in shape_diff(r, a) {
                self.fail(rel, d);
            }
            self.subs.learn(r, a);
        }
        if !rec_b.is_empty() && act_b.is_empty() {
            self.fail(rel, "no BOOKMARK event".into());
        }
        if let Some(r) = rec_b.first() {
            for a in &act_b {
                for d in shape_diff(r, a) {
                    self.fail(rel, format!("bookmark {d}"));
                }
            }
        }
        self.replayed.push(rel.to_string());
    }

    /// Checks a token's decoded header and claims against a recording.
    pub fn token_shape(&mut self, rel: &str, token: &str) {
        let fx = fixture(rel);
        let parts: Vec<&str> = token.split('.').collect();
        let decode = |s: &str| -> Value {
            let bytes = decode_b64url(s);
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if parts.len() != 3 {
            self.fail(rel, format!("not a JWT: {token}"));
            return;
        }
        for d in shape_diff(&fx["header"], &decode(parts[0]))
            .into_iter()
            .chain(shape_diff(&fx["claims"], &decode(parts[1])))
        {
            self.fail(rel, d);
        }
        self.replayed.push(rel.to_string());
    }

    /// Reports and asserts: no differences, and every file of `folder`
    /// replayed or listed in `not_replayed`.
    pub fn finish(self, folder: &str, prelude: usize, not_replayed: &[(&str, &str)]) {
        let in_folder = self
            .replayed
            .iter()
            .filter(|r| r.starts_with(&format!("{folder}/")))
            .count();
        let skipped: Vec<&str> = not_replayed
            .iter()
            .filter(|(f, _)| f.starts_with(&format!("{folder}/")))
            .map(|(f, _)| *f)
            .collect();
        let total = folder_files(folder).len();
        eprintln!("{folder}: {in_folder} of {total} files replayed (+{prelude} prelude), {} not replayed: {skipped:?}", total - in_folder);
        assert!(
            self.failures.is_empty(),
            "{} differences from the recordings:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        let missing: Vec<String> = folder_files(folder)
            .into_iter()
            .filter(|f| !self.replayed.contains(f) && !not_replayed.iter().any(|(n, _)| n == f))
            .collect();
        assert!(
            missing.is_empty(),
            "fixtures neither replayed nor listed in not_replayed: {missing:?}"
        );
    }
}

/// What happens while a watch is open.
pub enum During {
    Fixtures(&'static [&'static str]),
    LabelPatch(&'static str),
    Nothing,
}

fn decode_b64url(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => continue,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
