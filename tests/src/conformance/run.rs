//! Running a request-side case against a proxy in front of a recording
//! upstream, and judging what came of it.

use super::raw::{exchange, Got, Recorder};
use super::request_cases::{Case, Expect, Path, WARMUP, WARMUP_UPSTREAM};
use std::net::SocketAddr;

/// What came of a case.
#[derive(Debug)]
pub struct Outcome {
    pub got: Got,
    /// Whole requests the upstream received, the warm-up's left out.
    pub forwarded: Vec<Vec<u8>>,
    /// The warm-up request as the upstream received it (`Path::AfterHandoff`).
    pub warmup: Option<Vec<u8>>,
}

impl Outcome {
    /// The status of the case's own response, if one came.
    pub fn status(&self, case: &Case) -> Option<u16> {
        let i = usize::from(case.path == Path::AfterHandoff);
        self.got.responses.get(i).map(|r| r.status)
    }

    /// The proxy passed the case's request on whole.
    pub fn forwarded_whole(&self) -> bool {
        !self.forwarded.is_empty()
    }

    /// A short account for tables: the status and whether it went through.
    pub fn summary(&self, case: &Case) -> String {
        let status = self
            .status(case)
            .map_or_else(|| "closed".to_string(), |s| s.to_string());
        let fwd = if self.forwarded_whole() { "fwd" } else { "-" };
        format!("{status} {fwd}")
    }
}

/// Writes `bytes` with the name `live` (in any case, as a whole word: not
/// the `live` of `keep-alive`) made `host`.
pub fn rename(bytes: &[u8], host: &str) -> Vec<u8> {
    let word = |b: Option<&u8>| b.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-');
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        let here = &bytes[i..];
        if here.len() >= 4
            && here[..4].eq_ignore_ascii_case(b"live")
            && !word(i.checked_sub(1).and_then(|j| bytes.get(j)))
            && !word(bytes.get(i + 4))
        {
            if here[0] == b'L' {
                out.extend_from_slice(host.to_ascii_uppercase().as_bytes());
            } else {
                out.extend_from_slice(host.as_bytes());
            }
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Runs `case` through the proxy at `addr`, whose Backend `host` is `up`.
pub async fn run(addr: SocketAddr, up: &Recorder, case: &Case, host: &str) -> Outcome {
    let request = rename(&case.request, host);
    let got = match case.path {
        Path::Fast | Path::Hyper => exchange(addr, &request, &[false]).await,
        Path::AfterHandoff => {
            let both = [&rename(WARMUP, host)[..], &request].concat();
            exchange(addr, &both, &[false, false]).await
        }
    };
    let mut forwarded = up.requests();
    let warmup =
        (case.path == Path::AfterHandoff && !forwarded.is_empty()).then(|| forwarded.remove(0));
    Outcome {
        got,
        forwarded,
        warmup,
    }
}

/// Whether `outcome` is what `case` demands of the proxy (`host` as in
/// `run`); the reason when not.
pub fn judge(case: &Case, outcome: &Outcome, host: &str) -> Result<(), String> {
    let status = outcome.status(case);
    if case.path == Path::AfterHandoff && outcome.warmup != Some(rename(WARMUP_UPSTREAM, host)) {
        return Err(format!(
            "the warm-up request did not go through: {:?}",
            outcome.got.text()
        ));
    }
    let client_error = status.is_some_and(|s| (400..500).contains(&s));
    match &case.expect {
        Expect::Refused | Expect::BodyRefused if !client_error => Err(format!(
            "expected a 4xx, got {status:?}: {:?}",
            outcome.got.text()
        )),
        Expect::Refused | Expect::BodyRefused if outcome.forwarded_whole() => Err(format!(
            "refused, but the upstream received {:?}",
            String::from_utf8_lossy(&outcome.forwarded[0])
        )),
        Expect::Refused | Expect::BodyRefused => Ok(()),
        Expect::Forwarded(bytes) => {
            let want = rename(bytes, host);
            if status != Some(200) {
                return Err(format!(
                    "expected 200, got {status:?}: {:?}",
                    outcome.got.text()
                ));
            }
            if outcome.forwarded != [want.clone()] {
                return Err(format!(
                    "the upstream received {:?}, not {:?}",
                    outcome
                        .forwarded
                        .iter()
                        .map(|r| String::from_utf8_lossy(r).into_owned())
                        .collect::<Vec<_>>(),
                    String::from_utf8_lossy(&want)
                ));
            }
            Ok(())
        }
    }
}
