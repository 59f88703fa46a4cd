//! The API between `weft-control-plane` and proxies in mesh mode, shared by
//! both ends so they cannot drift apart.
//!
//! HTTP/2 over TLS 1.3, JSON bodies, so it can be debugged with curl:
//!
//! - `POST /v1/certificate`: body [`CertificateRequest`] (a CSR), answered
//!   with [`CertificateResponse`]. The caller proves who it is with
//!   `Authorization: Bearer <bootstrap token>` (first certificate) or with its
//!   current mesh certificate as TLS client certificate (renewal). The CA
//!   signs only the identity proven, whatever the CSR asks.
//! - `POST /v1/watch`: needs the proxy's mesh certificate. Both bodies stream
//!   newline-delimited JSON: the proxy sends [`WatchUp::Hello`], then an ACK
//!   or NACK for every snapshot, and [`WatchUp::Want`] when its app calls a
//!   name it has no config for; the control plane sends a full [`Snapshot`]
//!   whenever what that proxy sees changes, and [`WatchDown::Settled`] when
//!   a hello or want changed nothing (an unknown name; a version the proxy
//!   holds already, as from another replica). Every hello and want gets
//!   exactly one of the two, in order.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub const CERTIFICATE_PATH: &str = "/v1/certificate";
pub const WATCH_PATH: &str = "/v1/watch";

/// The control plane's own identity, in the service account it runs as.
pub const CONTROL_PLANE_NAMESPACE: &str = "weft-system";
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "weft-control-plane";

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// PEM PKCS#10 request; only its public key is used.
    pub csr: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CertificateResponse {
    /// PEM chain, leaf first.
    pub chain: String,
    /// PEM trust bundle (the mesh roots).
    pub roots: String,
    /// The leaf's validity, as Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
}

/// Proxy → control plane on the watch stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WatchUp {
    Hello(Hello),
    /// Names the app called that this proxy has no config for.
    Want {
        names: Vec<String>,
    },
    Ack {
        version: String,
    },
    Nack {
        version: String,
        reason: String,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Names this proxy instance (pod name, host name).
    pub name: String,
    /// The service it fronts, if any (selects its inbound policy).
    pub service: Option<String>,
    /// The version it serves now (after a reconnect), if any.
    pub version: Option<String>,
    /// Names it asked for before (after a reconnect).
    #[serde(default)]
    pub wants: Vec<String>,
}

/// Control plane → proxy on the watch stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WatchDown {
    Snapshot(Snapshot),
    /// The wants so far are taken into account and the snapshot in force
    /// (`version`) already reflects them.
    Settled {
        version: String,
    },
}

/// Control plane → proxy on the watch stream: a complete config for this
/// proxy, in the same YAML the files use.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Derived from the content: two control planes serving the same
    /// resources give the same version.
    pub version: String,
    pub yaml: String,
}

/// Encodes one message as a line of the stream.
pub fn line<T: Serialize>(msg: &T) -> bytes::Bytes {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

/// One direction of the watch as an HTTP body: each line is pushed through
/// a channel as it is ready (see [`line`]); the body ends when the sender
/// is dropped.
pub struct LineStream(pub mpsc::Receiver<Bytes>);

impl Body for LineStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Splits complete lines off the front of `buf` (bounded by `max` bytes per
/// line) and decodes them.
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            max,
        }
    }

    /// Adds bytes; returns the complete messages they finish.
    pub fn push<T: serde::de::DeserializeOwned>(&mut self, data: &[u8]) -> Result<Vec<T>, String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            let line = std::mem::replace(&mut self.buf, rest);
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(serde_json::from_slice(line).map_err(|e| format!("bad message: {e}"))?);
        }
        if self.buf.len() > self.max {
            return Err(format!("message longer than {} bytes", self.max));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_across_split_reads() {
        let msgs = vec![
            WatchUp::Hello(Hello {
                name: "a".into(),
                service: Some("reviews".into()),
                version: None,
                wants: vec!["ratings".into()],
            }),
            WatchUp::Want {
                names: vec!["details:9080".into()],
            },
            WatchUp::Ack {
                version: "v1".into(),
            },
            WatchUp::Nack {
                version: "v2".into(),
                reason: "bad\nthing".into(),
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(&line(m));
        }
        let mut r = LineReader::new(1024);
        let mut got: Vec<WatchUp> = Vec::new();
        for chunk in wire.chunks(7) {
            got.extend(r.push(chunk).unwrap());
        }
        assert_eq!(got, msgs);
        assert!(LineReader::new(4).push::<WatchUp>(b"{\"ack\":").is_err());
    }
}
