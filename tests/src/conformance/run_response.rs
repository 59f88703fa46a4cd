//! Running a response-side case: a client asks twice on one connection,
//! the upstream gives the case's answer each time, and the client's view is
//! judged.

use super::h2::{exchange as h2_exchange, H2Response};
use super::raw::{exchange, Response};
use super::response_cases::{Answer, Client, Relay, NOT_TRAILERS};
use bytes::Bytes;
use std::net::SocketAddr;

/// Asks the proxy at `addr` twice, as `client`, for Backend `host`; whether
/// what came back is what `answer` demands, and the reason when not.
pub async fn run(
    addr: SocketAddr,
    answer: &Answer,
    client: Client,
    host: &str,
) -> Result<(), String> {
    // A HEAD response has no body, so a broken body cannot show in it.
    let relay = match (client, answer.relay) {
        (Client::Http1Head, Relay::Cut) => Relay::Relayed {
            status: 200,
            body: b"",
        },
        (_, r) => r,
    };
    match client {
        Client::Http2Get | Client::Http2Post => {
            let req = || {
                let b = http::Request::builder().uri(format!("http://{host}/a"));
                if client == Client::Http2Get {
                    b.method("GET").body(None)
                } else {
                    b.method("POST").body(Some(Bytes::from_static(b"x")))
                }
                .expect("request")
            };
            let got = h2_exchange(addr, vec![req(), req()]).await;
            for (i, r) in got.iter().enumerate() {
                judge_h2(answer, relay, r).map_err(|e| format!("response {}: {e}", i + 1))?;
            }
            Ok(())
        }
        _ => {
            let one = client.http1_request(host);
            let head = client == Client::Http1Head;
            let got = exchange(addr, format!("{one}{one}").as_bytes(), &[head, head]).await;
            let text = || got.text();
            match relay {
                Relay::Cut => match got.responses.first() {
                    Some(r) if r.status == 200 => {
                        Err(format!("a broken body looked whole: {:?}", text()))
                    }
                    _ => Ok(()),
                },
                _ if got.responses.len() < 2 => Err(format!("not two responses: {:?}", text())),
                _ => {
                    for (i, r) in got.responses.iter().enumerate() {
                        judge_h1(answer, relay, client, r)
                            .map_err(|e| format!("response {}: {e}: {:?}", i + 1, text()))?;
                    }
                    Ok(())
                }
            }
        }
    }
}

fn refused(status: u16, error: Option<&str>) -> Result<(), String> {
    if status == 502 && error == Some("upstream-protocol") {
        Ok(())
    } else {
        Err(format!(
            "expected 502 upstream-protocol, got {status} {error:?}"
        ))
    }
}

fn judge_h1(answer: &Answer, relay: Relay, client: Client, r: &Response) -> Result<(), String> {
    let Relay::Relayed { status, body } = relay else {
        return refused(r.status, r.header("x-weft-error"));
    };
    if r.status != status {
        return Err(format!("status {}, not {status}", r.status));
    }
    let lengths = r.values("content-length");
    let codings = r.values("transfer-encoding");
    if lengths.len() + codings.len() > 1 {
        return Err(format!("more than one framing: {lengths:?} {codings:?}"));
    }
    if !codings.iter().all(|c| *c == "chunked") || !lengths.iter().all(|l| l.parse::<u64>().is_ok())
    {
        return Err(format!(
            "a framing field not well formed: {lengths:?} {codings:?}"
        ));
    }
    let head = client == Client::Http1Head;
    if status == 204 && !(lengths.is_empty() && codings.is_empty()) {
        return Err("a 204 with a framing field".into());
    }
    if !head && status != 204 && status != 304 {
        if lengths.is_empty() && codings.is_empty() {
            return Err("no framing".into());
        }
        if lengths
            .first()
            .is_some_and(|l| *l != body.len().to_string())
        {
            return Err(format!(
                "content-length {lengths:?} for {} bytes",
                body.len()
            ));
        }
        if r.body != body {
            return Err(format!("body {:?}", String::from_utf8_lossy(&r.body)));
        }
    }
    trailers(answer, client, &r.trailers)
}

fn judge_h2(answer: &Answer, relay: Relay, r: &Result<H2Response, String>) -> Result<(), String> {
    let r = match (relay, r) {
        (Relay::Cut, Ok(r)) if r.status == 200 => {
            return Err(format!("a broken body looked whole: {r:?}"));
        }
        (Relay::Cut, _) => return Ok(()),
        (_, Err(e)) => return Err(format!("failed: {e}")),
        (_, Ok(r)) => r,
    };
    let Relay::Relayed { status, body } = relay else {
        return refused(r.status, r.header("x-weft-error"));
    };
    if r.status != status || r.body != body {
        return Err(format!(
            "got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if let Some(f) = ["transfer-encoding", "connection", "keep-alive", "upgrade"]
        .iter()
        .find(|f| r.header(f).is_some())
    {
        return Err(format!("a connection field over HTTP/2: {f}"));
    }
    if r.header("content-length")
        .is_some_and(|l| l != body.len().to_string())
        && status != 304
    {
        return Err(format!("content-length {:?}", r.header("content-length")));
    }
    trailers(answer, Client::Http2Get, &r.trailers)
}

fn trailers(answer: &Answer, client: Client, got: &[(String, String)]) -> Result<(), String> {
    if let Some((k, _)) = got.iter().find(|(k, _)| NOT_TRAILERS.contains(&k.as_str())) {
        return Err(format!("{k} as a trailer"));
    }
    if client.takes_trailers() {
        for (k, v) in answer.trailers {
            if !got.iter().any(|(gk, gv)| gk == k && gv == v) {
                return Err(format!("trailer {k}: {v} missing from {got:?}"));
            }
        }
    }
    Ok(())
}
