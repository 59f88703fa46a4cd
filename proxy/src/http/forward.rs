//! One exchange with one upstream endpoint: take a connection, send the
//! request, hand back a streaming response. Upgrades (WebSocket and others)
//! are spliced here once both sides have switched protocols.

use crate::backend::Endpoint;
use crate::body::pace::PaceError;
use crate::body::{RequestBody, ResponseBody};
use crate::h1::framing::settle_response;
use crate::h1::{client as h1client, strip_hop_by_hop};
use crate::http::errors::ProxyError;
use crate::http::headers::upgrade_requested;
use crate::resilience::limits::Limits;
use crate::telemetry::metrics::Metrics;
use crate::tls::mesh::MeshTls;
use crate::transport::{ConnectError, PoolSettings, RawConn};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Instant;

/// The wire protocol towards an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    Http1,
    Http2,
}

impl Wire {
    /// What a backend of this protocol speaks.
    pub(crate) fn for_protocol(p: weft_mesh::config::Protocol) -> Wire {
        use weft_mesh::config::Protocol;
        match p {
            Protocol::Http2 | Protocol::Grpc => Wire::Http2,
            Protocol::Http | Protocol::Tcp => Wire::Http1,
        }
    }
}

/// A request ready to go upstream, with what the client asked to upgrade to.
pub(crate) struct Outgoing {
    pub(crate) req: Request<RequestBody>,
    /// An authority to send instead of the client's (a hostname rewrite).
    pub(crate) authority: Option<Authority>,
    /// When the client's request arrived (latency is measured from here).
    pub(crate) started: Instant,
    pub(crate) upgrade: Option<(HeaderValue, OnUpgrade)>,
}

impl Outgoing {
    /// Splits off what the upstream request needs from the client's
    /// request. An upgrade offer becomes a tunnel only to WebSocket or to a
    /// protocol in `upgrades` (the Backend's list), and only on a request
    /// without a body; any other offer (h2c among them) is dropped with the
    /// hop-by-hop fields and the request goes as the plain request it also
    /// is.
    pub(crate) fn new(
        mut req: Request<RequestBody>,
        authority: Option<Authority>,
        started: Instant,
        upgrades: &[Box<str>],
    ) -> Outgoing {
        let upgrade = match req.version() {
            Version::HTTP_11 if req.body().is_end_stream() => upgrade_requested(req.headers())
                .filter(|p| tunnel_allowed(p, upgrades))
                .map(|p| (p, hyper::upgrade::on(&mut req))),
            _ => None,
        };
        if upgrade.is_some() {
            *req.body_mut() = RequestBody::Empty;
        }
        Outgoing {
            req,
            authority,
            started,
            upgrade,
        }
    }

    /// What connecting needs to know of it.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            started: self.started,
            upgrade: self.upgrade.is_some(),
            bodiless: self.upgrade.is_none() && self.req.body().is_end_stream(),
        }
    }
}

/// Whether an offer to switch to `proto` may become a tunnel.
fn tunnel_allowed(proto: &HeaderValue, upgrades: &[Box<str>]) -> bool {
    let p = proto.as_bytes().trim_ascii();
    p.eq_ignore_ascii_case(b"websocket")
        || upgrades
            .iter()
            .any(|u| p.eq_ignore_ascii_case(u.as_bytes()))
}

/// What kind of connection a request needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// When the request arrived (a pooled connection's idle age is judged
    /// against it).
    pub(crate) started: Instant,
    /// It asks to switch protocols: a fresh HTTP/1.1 connection of its own.
    pub(crate) upgrade: bool,
    /// It has no body: plain HTTP/1.1 goes through the lean client.
    pub(crate) bodiless: bool,
}

/// Where a try goes and under which settings.
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a Arc<Endpoint>,
    pub(crate) wire: Wire,
    pub(crate) settings: &'a PoolSettings,
    /// The backend's concurrency limits (none for the local app or a
    /// passthrough destination).
    pub(crate) limits: Option<&'a Limits>,
    /// This proxy's mesh identity: endpoints that name theirs are dialled
    /// over mTLS.
    pub(crate) mesh: Option<&'a MeshTls>,
    pub(crate) metrics: &'a Arc<Metrics>,
}

/// A connection ready to carry one request.
pub(crate) enum Upstream {
    /// A plain HTTP/1.1 connection for the lean client (requests without a
    /// body).
    Lean(RawConn),
    Http1(hyper::client::conn::http1::SendRequest<RequestBody>),
    /// HTTP/1.1 on a connection of its own that is never pooled (upgrades
    /// to a mesh peer over mTLS).
    Http1Unpooled(hyper::client::conn::http1::SendRequest<RequestBody>),
    Http2(hyper::client::conn::http2::SendRequest<RequestBody>),
    /// HTTP/2 over mTLS to a peer sidecar, whatever the app spoke: an
    /// HTTP/1 request carries [`ORIG_PROTO_HEADER`] so the peer hands it to
    /// its app as HTTP/1.1 again.
    Mesh(hyper::client::conn::http2::SendRequest<RequestBody>),
}

/// Set by the calling sidecar on a request it carried from HTTP/1 to HTTP/2;
/// the receiving sidecar removes it and speaks HTTP/1.1 to its app.
pub(crate) const ORIG_PROTO_HEADER: &str = "x-weft-orig-proto";

impl Target<'_> {
    /// Takes a pooled connection, or makes one. Nothing of the request is
    /// consumed yet, so a failure here is always safe to retry.
    ///
    /// With a mesh identity and an endpoint that names its identity, the
    /// connection is mTLS and HTTP/2 whatever `wire` says (a fresh HTTP/1.1
    /// one for an upgrade). A bodiless request over plain HTTP/1.1 gets a
    /// connection for the lean client.
    pub(crate) async fn connect(&self, shape: Shape) -> Result<Upstream, ProxyError> {
        let (ep, settings, limits, metrics) =
            (self.endpoint, self.settings, self.limits, self.metrics);
        if let Some(mesh) = self.mesh {
            if let Some(peer) = &ep.identity {
                return Box::pin(self.connect_mesh(peer, mesh, shape.upgrade)).await;
            }
        }
        Ok(match self.wire {
            Wire::Http1 if shape.bodiless && !shape.upgrade => Upstream::Lean(
                ep.pool
                    .raw(ep.addr, settings, metrics, limits, shape.started)
                    .await?,
            ),
            Wire::Http1 => Upstream::Http1(
                ep.pool
                    .h1(ep.addr, settings, metrics, limits, shape.started)
                    .await?,
            ),
            Wire::Http2 => {
                Upstream::Http2(ep.pool.h2(ep.addr, settings, metrics, limits, None).await?)
            }
        })
    }

    async fn connect_mesh(
        &self,
        peer: &Arc<str>,
        mesh: &MeshTls,
        upgrade: bool,
    ) -> Result<Upstream, ProxyError> {
        let (ep, settings, limits, metrics) =
            (self.endpoint, self.settings, self.limits, self.metrics);
        let config = mesh
            .client(peer, upgrade)
            .map_err(|e| ConnectError::TlsConfig(ep.addr, e.to_string()))?;
        Ok(if upgrade {
            Upstream::Http1Unpooled(
                ep.pool
                    .h1_tls(ep.addr, settings, metrics, limits, &config)
                    .await?,
            )
        } else {
            Upstream::Mesh(
                ep.pool
                    .h2(ep.addr, settings, metrics, limits, Some(&config))
                    .await?,
            )
        })
    }

    /// Connects and sends, for a single try (inbound, passthrough).
    pub(crate) async fn call(&self, out: Outgoing) -> Result<Response<ResponseBody>, ProxyError> {
        let upstream = self.connect(out.shape()).await?;
        self.send(upstream, out).await.map_err(|u| u.error)
    }
}

/// A failed send; `request` is the request itself when it was never
/// written (the pooled connection closed first), so it can go elsewhere.
pub(crate) struct Unsent {
    pub(crate) error: ProxyError,
    pub(crate) request: Option<Request<RequestBody>>,
}

impl From<ProxyError> for Unsent {
    fn from(error: ProxyError) -> Unsent {
        Unsent {
            error,
            request: None,
        }
    }
}

/// The pace rule the client's body broke, if that is why `e` happened.
fn pace_error(e: &hyper::Error) -> Option<PaceError> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(p) = s.downcast_ref::<PaceError>() {
            return Some(*p);
        }
        src = s.source();
    }
    None
}

fn unsent(mut e: hyper::client::conn::TrySendError<Request<RequestBody>>) -> Unsent {
    let request = e.take_message();
    let error = e.into_error();
    // Reading the client's own body failed (it went away mid-upload): the
    // client's fault, not the upstream's.
    let error = if let Some(pace) = pace_error(&error) {
        ProxyError::BodyTimeout(pace)
    } else if error.is_user() {
        ProxyError::BadRequest("the request body could not be read")
    } else if error.is_parse() || error.is_parse_status() {
        // An answer the client could not be given as it came.
        ProxyError::UpstreamProtocol(error.to_string())
    } else {
        ProxyError::Upstream(error)
    };
    Unsent { error, request }
}

impl Target<'_> {
    /// Sends `out` on `upstream` and returns the response, streaming; on a
    /// failure, hands back the request if it was never written.
    pub(crate) async fn send(
        &self,
        upstream: Upstream,
        out: Outgoing,
    ) -> Result<Response<ResponseBody>, Unsent> {
        let (ep, settings, metrics) = (self.endpoint, self.settings, self.metrics);
        let Outgoing {
            mut req,
            authority,
            upgrade,
            started,
        } = out;
        let active = ep.load.start();
        strip_hop_by_hop(req.headers_mut());
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let pooled = matches!(upstream, Upstream::Http1(_));
        let mesh_hop = matches!(upstream, Upstream::Mesh(_));
        match upstream {
            Upstream::Lean(conn) => {
                origin_form(&mut req, authority, path);
                let home = h1client::Home {
                    pool: ep.pool.clone(),
                    max_idle: settings.max_idle,
                    since: started,
                };
                let resp = h1client::send(conn, req, home).await.map_err(|f| match f {
                    h1client::Failure::Stale(req) => Unsent {
                        error: ProxyError::StaleConnection,
                        request: Some(*req),
                    },
                    // A head the client could not read, or whose framing
                    // is ambiguous.
                    h1client::Failure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        Unsent::from(ProxyError::UpstreamProtocol(e.to_string()))
                    }
                    h1client::Failure::Io(e) => Unsent::from(ProxyError::UpstreamIo(e)),
                })?;
                ep.load.observe_since(started);
                // The lean client leaves out (or strips) hop-by-hop fields itself.
                let (parts, body) = resp.into_parts();
                Ok(Response::from_parts(
                    parts,
                    ResponseBody::lean(body, active),
                ))
            }
            Upstream::Http1(mut tx) | Upstream::Http1Unpooled(mut tx) => {
                origin_form(&mut req, authority, path);
                if let Some((proto, _)) = &upgrade {
                    req.headers_mut().insert(
                        http::header::CONNECTION,
                        HeaderValue::from_static("upgrade"),
                    );
                    req.headers_mut()
                        .insert(http::header::UPGRADE, proto.clone());
                }
                let head_req = req.method() == Method::HEAD;
                let resp = tx.try_send_request(req).await.map_err(unsent)?;
                ep.load.observe_since(started);
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    switched_as_offered(&resp, upgrade.as_ref())?;
                    return Ok(splice_upgrade(resp, upgrade, metrics));
                }
                let (mut parts, body) = resp.into_parts();
                // Refused: `tx` is dropped with the response, so its
                // connection is not used again.
                settle_response(parts.status.as_u16(), head_req, &mut parts.headers)
                    .map_err(|m| ProxyError::UpstreamProtocol(m.to_string()))?;
                strip_hop_by_hop(&mut parts.headers);
                let reuse = pooled.then(|| ep.pool.reusable(tx, settings.max_idle, started));
                Ok(Response::from_parts(
                    parts,
                    ResponseBody::upstream(body, reuse, Some(active)),
                ))
            }
            Upstream::Http2(mut tx) | Upstream::Mesh(mut tx) => {
                if mesh_hop && req.version() < Version::HTTP_2 {
                    req.headers_mut()
                        .insert(ORIG_PROTO_HEADER, HeaderValue::from_static("HTTP/1.1"));
                }
                *req.version_mut() = Version::HTTP_2;
                let authority = authority
                    .or_else(|| req.uri().authority().cloned())
                    .or_else(|| {
                        req.headers()
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .and_then(|h| h.parse().ok())
                    })
                    .unwrap_or_else(|| {
                        Authority::from_maybe_shared(ep.addr.to_string())
                            .unwrap_or(Authority::from_static("upstream"))
                    });
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(Scheme::HTTP);
                parts.authority = Some(authority);
                parts.path_and_query = Some(path);
                *req.uri_mut() =
                    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid URI"))?;
                req.headers_mut().remove(http::header::HOST);
                let head_req = req.method() == Method::HEAD;
                let resp = tx.try_send_request(req).await.map_err(unsent)?;
                ep.load.observe_since(started);
                let (mut parts, body) = resp.into_parts();
                settle_response(parts.status.as_u16(), head_req, &mut parts.headers)
                    .map_err(|m| ProxyError::UpstreamProtocol(m.to_string()))?;
                strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(
                    parts,
                    ResponseBody::upstream(body, None, Some(active)),
                ))
            }
        }
    }
}

/// HTTP/2 and proxy-form requests carry the authority in the URI; HTTP/1.1
/// upstreams want it in Host and an origin-form target.
fn origin_form(req: &mut Request<RequestBody>, authority: Option<Authority>, path: PathAndQuery) {
    *req.version_mut() = Version::HTTP_11;
    let authority = authority.or_else(|| match req.headers().contains_key(http::header::HOST) {
        true => None,
        false => req.uri().authority().cloned(),
    });
    if let Some(a) = &authority {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    *req.uri_mut() = Uri::from(path);
}

/// A 101 is only taken when the client asked to switch, and to the
/// protocol it offered; anything else would turn the connection into a
/// tunnel no request of it asked for.
fn switched_as_offered(
    resp: &Response<hyper::body::Incoming>,
    offered: Option<&(HeaderValue, OnUpgrade)>,
) -> Result<(), ProxyError> {
    let Some((proto, _)) = offered else {
        return Err(ProxyError::UpstreamProtocol(
            "101 Switching Protocols without an upgrade offer".into(),
        ));
    };
    let to = resp
        .headers()
        .get(http::header::UPGRADE)
        .map(|v| v.as_bytes().trim_ascii());
    let offered = proto.as_bytes().trim_ascii();
    match to.is_some_and(|t| t.eq_ignore_ascii_case(offered)) {
        true => Ok(()),
        false => Err(ProxyError::UpstreamProtocol(
            "101 Switching Protocols to another protocol than offered".into(),
        )),
    }
}

/// The upstream agreed to switch protocols: answer the client with the same
/// 101 and copy bytes both ways once both sides have switched.
fn splice_upgrade(
    mut resp: Response<hyper::body::Incoming>,
    client: Option<(HeaderValue, OnUpgrade)>,
    metrics: &Arc<Metrics>,
) -> Response<ResponseBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    if let Some((_, client)) = client {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client, upstream) {
                Ok((c, u)) => {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        metrics.tcp_bytes_add("upgrade", a + b);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
            }
        });
    }
    Response::from_parts(parts, ResponseBody::empty())
}
