//! An HTTP/2 client with prior knowledge, on the `h2` crate rather than
//! hyper so a case can send what hyper's client would tidy away (a `Host`
//! beside `:authority`, a lower-case method) and see every field and
//! trailer that came back.

use bytes::Bytes;
use http::Request;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct H2Response {
    pub status: u16,
    /// (name, value) in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl H2Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `requests` one after another on one connection to `addr`; each
/// one's response, or what went wrong (a reset stream, a refused request).
pub async fn exchange(
    addr: SocketAddr,
    requests: Vec<Request<Option<Bytes>>>,
) -> Vec<Result<H2Response, String>> {
    let limit = Duration::from_secs(5);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for req in requests {
        let one = async {
            let (head, body) = req.into_parts();
            let req = Request::from_parts(head, ());
            client = client.clone().ready().await.map_err(|e| e.to_string())?;
            let (resp, mut send) = client
                .send_request(req, body.is_none())
                .map_err(|e| e.to_string())?;
            if let Some(b) = body {
                send.send_data(b, true).map_err(|e| e.to_string())?;
            }
            read(resp).await
        };
        out.push(
            tokio::time::timeout(limit, one)
                .await
                .unwrap_or_else(|_| Err("timed out".into())),
        );
    }
    out
}

async fn read(resp: h2::client::ResponseFuture) -> Result<H2Response, String> {
    let resp = resp.await.map_err(|e| e.to_string())?;
    let (head, mut body) = resp.into_parts();
    let pairs = |m: &http::HeaderMap| {
        m.iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    Ok(H2Response {
        status: head.status.as_u16(),
        headers: pairs(&head.headers),
        body: data,
        trailers: trailers.as_ref().map(pairs).unwrap_or_default(),
    })
}
