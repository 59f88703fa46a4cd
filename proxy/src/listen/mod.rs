//! Accept loops: each connection is classified (HTTP/1, HTTP/2, opaque) and
//! served until it closes or shutdown asks it to finish.

pub(crate) mod detect;
mod intercepted;
pub(crate) mod orig_dst;
pub(crate) mod twin;

use crate::body::pace::Paced;
use crate::body::RequestBody;
use crate::drain::{Drain, Watch};
use crate::h1;
use crate::http::errors::ProxyError;
use crate::http::ConnInfo;
use crate::proxy::Proxy;
use crate::resilience::limits::{Kind, Limits};
use crate::telemetry::metrics::ListenerLimitLabels;
use detect::Detected;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// What every connection of one listener shares: its direction, and what
/// it may hold at once: connections, and requests in flight (from a
/// request's arrival to the end of its response body).
struct Listener {
    direction: Direction,
    caps: Limits,
    requests_refused: Counter,
}

/// Accepts until shutdown is signalled.
pub(crate) async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    direction: Direction,
    drain: &Drain,
) {
    let mut stop = drain.watch();
    let caps = Limits::new(proxy.opts.max_connections, 0, proxy.opts.max_requests, 0);
    let refused = |limit| {
        proxy
            .metrics
            .listener_refused
            .get_or_create(&ListenerLimitLabels {
                direction: direction.label(),
                limit,
            })
            .clone()
    };
    let conns_refused = refused("connections");
    let listener_state = Arc::new(Listener {
        direction,
        caps: caps.clone(),
        requests_refused: refused("requests"),
    });
    let gauge = proxy
        .metrics
        .active_connections
        .get_or_create(&crate::telemetry::metrics::DirectionLabels {
            direction: direction.label(),
        })
        .clone();
    let accepted = proxy
        .metrics
        .connections
        .get_or_create(&crate::telemetry::metrics::DirectionLabels {
            direction: direction.label(),
        })
        .clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.signalled() => break,
        };
        accepted.inc();
        let Some(permit) = caps.try_acquire(Kind::Connections) else {
            // At the cap: closed at once (with a reset, so the client does
            // not wait), counted, and logged at debug level.
            conns_refused.inc();
            // A zero linger resets at once (it never blocks the thread).
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            tracing::debug!(%peer, direction = direction.label(), "connection refused: at --max-connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let watch = drain.watch();
        let gauge = gauge.clone();
        let listener = listener_state.clone();
        tokio::spawn(async move {
            gauge.inc();
            connection(proxy, stream, peer, listener, watch).await;
            gauge.dec();
            drop(permit);
        });
    }
}

async fn connection(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    watch: Watch,
) {
    let direction = listener.direction;
    let orig_dst = orig_dst::original_dst(&stream);
    // Intercepted outbound: where the app was going, as a name (learnt
    // from the control plane on first sight).
    let orig_name = match (direction, orig_dst) {
        (Direction::Outbound, Some(dst)) => Some(intercepted::learn(&proxy, dst).await),
        _ => None,
    };
    // Intercepted traffic for a known TCP backend needs no sniffing (and a
    // server-speaks-first protocol would give us nothing to sniff).
    if let (Some(dst), Some(name)) = (orig_dst, &orig_name) {
        let b = intercepted::tcp_backend(&proxy.snapshot.load(), dst, name);
        if let Some(b) = b {
            let mesh = proxy.mesh.load_full();
            crate::tcp::to_backend(&proxy.metrics, mesh.as_deref(), stream, &b, dst).await;
            return;
        }
    }
    let mut detected = detect::detect(&stream, proxy.opts.detect_timeout).await;
    // A client that dialled the outbound listener explicitly (not redirected
    // to it) can only be speaking HTTP: bytes that do not look like a request
    // line get hyper's 400 rather than a silent close.
    if direction == Direction::Outbound && orig_dst.is_none() && detected == Detected::Opaque {
        detected = Detected::Http1;
    }
    let info = |peer_identity| {
        Arc::new(ConnInfo {
            peer,
            orig_dst,
            orig_name: orig_name.clone(),
            peer_identity,
        })
    };
    let mesh = match direction {
        Direction::Inbound => proxy.mesh.load_full(),
        Direction::Outbound => None,
    };
    let plaintext = !matches!(detected, Detected::Tls) || mesh.is_none();
    if direction == Direction::Inbound && plaintext {
        let snap = proxy.snapshot.load();
        if snap.mesh.inbound_strict {
            drop(snap);
            proxy.metrics.inbound_rejected("plaintext");
            tracing::debug!(%peer, "strict inbound: closing a plaintext connection");
            return;
        }
        // Opaque TCP: only the `from` parts of a policy apply, and a
        // plaintext peer has no identity.
        if matches!(
            detected,
            Detected::Tls | Detected::Opaque | Detected::Nothing
        ) && !snap.authz.is_empty()
            && !snap.authz.allows(&crate::authz::Subject {
                identity: None,
                request: None,
            })
        {
            drop(snap);
            proxy.metrics.inbound_rejected("forbidden");
            tracing::debug!(%peer, "inbound TCP connection forbidden by AuthorizationPolicy");
            return;
        }
    }
    match detected {
        Detected::Http1 => serve_http(proxy, stream, info(None), listener, watch, false).await,
        Detected::Http2 => serve_http(proxy, stream, info(None), listener, watch, true).await,
        Detected::Tls if direction == Direction::Inbound && mesh.is_some() => {
            let Some(mesh) = mesh else {
                return;
            };
            let handshake = mesh.acceptor.accept(stream);
            let limit = proxy.opts.detect_timeout.max(Duration::from_secs(10));
            let tls = match tokio::time::timeout(limit, handshake).await {
                Ok(Ok(tls)) => {
                    proxy.metrics.tls_handshake("inbound", Ok(()));
                    tls
                }
                Ok(Err(e)) => {
                    proxy.metrics.tls_handshake("inbound", Err(&e));
                    tracing::debug!(%peer, error = %e, "inbound mTLS handshake failed");
                    return;
                }
                Err(_) => {
                    let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
                    proxy.metrics.tls_handshake("inbound", Err(&e));
                    tracing::debug!(%peer, "inbound mTLS handshake timed out");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            let alpn = session.alpn_protocol();
            let h2 = alpn == Some(b"h2");
            let tcp = alpn == Some(crate::tls::mesh::TCP_ALPN);
            let id = weft_mesh::identity::peer_identity(session).map(Arc::<str>::from);
            if tcp {
                return inbound_tcp(&proxy, tls, id.as_deref(), orig_dst, peer).await;
            }
            serve_http(proxy, tls, info(id), listener, watch, h2).await
        }
        Detected::Tls | Detected::Opaque | Detected::Nothing => {
            let timeout = proxy.opts.connect_timeout;
            let target = match direction {
                Direction::Inbound => Some(app_target(&proxy, orig_dst)),
                Direction::Outbound => {
                    // Not HTTP after all: to the Service at the original
                    // destination if it is one.
                    let b = orig_name
                        .as_deref()
                        .and_then(|n| intercepted::service_backend(&proxy.snapshot.load(), n));
                    if let (Some(b), Some(dst)) = (b, orig_dst) {
                        let mesh = proxy.mesh.load_full();
                        let metrics = &proxy.metrics;
                        return crate::tcp::to_backend(metrics, mesh.as_deref(), stream, &b, dst)
                            .await;
                    }
                    orig_dst
                }
            };
            match target {
                Some(t) => {
                    crate::tcp::forward(&proxy.metrics, stream, t, timeout, direction.label()).await
                }
                None => {
                    tracing::debug!(%peer, "closing a connection that is neither HTTP nor intercepted")
                }
            }
        }
    }
}

/// Where inbound opaque TCP goes: the app on the port the peer dialled
/// when the connection was redirected to us (a pod's app may listen on
/// several), else `--app`.
fn app_target(proxy: &Proxy, orig_dst: Option<SocketAddr>) -> SocketAddr {
    match orig_dst {
        Some(d) => SocketAddr::new(proxy.opts.app.ip(), d.port()),
        None => proxy.opts.app,
    }
}

/// Opaque TCP from a peer sidecar over mTLS (ALPN `weft-tcp`): the `from`
/// rules of the AuthorizationPolicy apply to its verified identity, then
/// the decrypted bytes go to the app.
async fn inbound_tcp<S>(
    proxy: &Proxy,
    tls: S,
    identity: Option<&str>,
    orig_dst: Option<SocketAddr>,
    peer: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    {
        let snap = proxy.snapshot.load();
        let subject = crate::authz::Subject {
            identity,
            request: None,
        };
        if !snap.authz.is_empty() && !snap.authz.allows(&subject) {
            drop(snap);
            proxy.metrics.inbound_rejected("forbidden");
            tracing::debug!(%peer, identity, "inbound TCP over mTLS forbidden by AuthorizationPolicy");
            return;
        }
    }
    let target = app_target(proxy, orig_dst);
    let timeout = proxy.opts.connect_timeout;
    crate::tcp::forward(&proxy.metrics, tls, target, timeout, "inbound").await
}

async fn serve_http<S>(
    proxy: Arc<Proxy>,
    stream: S,
    info: Arc<ConnInfo>,
    listener: Arc<Listener>,
    mut watch: Watch,
    h2: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let fast_info = info.clone();
    let svc_proxy = proxy.clone();
    let svc_listener = listener.clone();
    let pace = proxy.opts.body_pace;
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = svc_proxy.clone();
        let info = info.clone();
        let listener = svc_listener.clone();
        async move {
            let req = req.map(|b| RequestBody::Incoming(Paced::new(b, pace)));
            Ok::<_, Infallible>(handle(&listener, proxy, info, req).await)
        }
    });
    let opts = &proxy.opts;
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(opts.max_header_bytes as u32)
            .max_concurrent_streams(1024)
            .serve_connection(TokioIo::new(stream), svc);
        drive(conn, |c| c.graceful_shutdown(), watch, peer).await
    } else {
        let limits = h1::server::Limits {
            max_head: opts.max_header_bytes,
            header_read_timeout: opts.header_read_timeout,
        };
        let fast = |req| handle(&listener, proxy.clone(), fast_info.clone(), req);
        let io = match h1::server::serve(stream, limits, &mut watch, fast).await {
            h1::server::End::Done => return,
            h1::server::End::Handoff(rest) => TokioIo::new(rest),
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Some(opts.header_read_timeout).filter(|d| !d.is_zero()))
            .max_header_size(opts.max_header_bytes)
            .serve_connection(io, svc)
            .with_upgrades();
        drive(conn, |c| c.graceful_shutdown(), watch, peer).await
    }
}

/// One request, to the handler of its listener's direction, unless the
/// listener is at its limit of requests in flight (then 503 `overloaded`).
async fn handle(
    listener: &Listener,
    proxy: Arc<Proxy>,
    info: Arc<ConnInfo>,
    req: http::Request<RequestBody>,
) -> http::Response<crate::body::ResponseBody> {
    let direction = listener.direction;
    let Some(permit) = listener.caps.try_acquire(Kind::Requests) else {
        listener.requests_refused.inc();
        let max = listener.caps.max(Kind::Requests);
        let grpc = crate::http::errors::is_grpc(&req);
        return ProxyError::ListenerOverloaded(direction.label(), max).respond(grpc);
    };
    let mut resp = match direction {
        Direction::Outbound => crate::http::outbound::outbound(proxy, info, req).await,
        Direction::Inbound => crate::http::inbound::inbound(proxy, info, req).await,
    };
    // Set in place: the response is not moved for it.
    resp.body_mut().hold_listener_permit(permit);
    resp
}

/// Serves a connection to its end; on shutdown, asks it to finish what is in
/// flight (and accept nothing new) rather than cutting it.
async fn drive<C>(conn: C, graceful: impl FnOnce(Pin<&mut C>), mut watch: Watch, peer: SocketAddr)
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_end(r, peer),
        _ = watch.signalled() => {
            graceful(conn.as_mut());
            log_end(conn.await, peer);
        }
    }
}

fn log_end(r: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = r {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}
