//! The IPv6 twins of the outbound and inbound listeners, for IPv6
//! interception: an ip6tables REDIRECT delivers the app's outgoing
//! connections to `[::1]:<port>` and incoming ones to the pod's own IPv6
//! address, where an IPv4 listener never sees them. So beside an
//! IPv4-loopback listener (`127.0.0.1:15001`, the default `--outbound`) the
//! proxy also listens on `[::1]` at the same port, and beside an any-address
//! one (`0.0.0.0:15006`) on `[::]` (IPv6 only, so the two do not clash).
//! The injector's env needs nothing more, and a pod without IPv6 just has
//! no twin.

use super::Direction;
use crate::drain::Drain;
use crate::proxy::Proxy;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;

/// The IPv6 address twinning `addr`, if it has one: only the IPv4 loopback
/// and any-address at a fixed port (port 0 means a test's throwaway
/// listener, which is never a REDIRECT target).
pub(crate) fn of(addr: SocketAddr) -> Option<SocketAddr> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    if v4.port() == 0 {
        return None;
    }
    let ip = if v4.ip().is_loopback() {
        Ipv6Addr::LOCALHOST
    } else if v4.ip().is_unspecified() {
        Ipv6Addr::UNSPECIFIED
    } else {
        return None;
    };
    Some(SocketAddr::new(ip.into(), v4.port()))
}

/// Listens on the twin of `addr`, IPv6 only; `None` (logged at debug level)
/// when there is no twin or the host cannot give it (IPv6 disabled).
pub(crate) fn bind(what: &str, addr: SocketAddr) -> Option<TcpListener> {
    let twin = of(addr)?;
    let listen = || -> std::io::Result<TcpListener> {
        let sock = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_only_v6(true)?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&twin.into())?;
        sock.listen(1024)?;
        TcpListener::from_std(sock.into())
    };
    match listen() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(%twin, error = %e, "no IPv6 {what} listener");
            None
        }
    }
}

/// Serves a twin like its IPv4 listener, if there is one.
pub(crate) async fn serve(
    listener: Option<TcpListener>,
    proxy: Arc<Proxy>,
    direction: Direction,
    drain: &Drain,
) {
    if let Some(l) = listener {
        super::serve(l, proxy, direction, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_any_at_a_fixed_port_have_twins() {
        let twin = |s: &str| of(s.parse().expect("address")).map(|a| a.to_string());
        assert_eq!(twin("127.0.0.1:15001").as_deref(), Some("[::1]:15001"));
        assert_eq!(twin("0.0.0.0:15006").as_deref(), Some("[::]:15006"));
        assert_eq!(twin("127.0.0.1:0"), None);
        assert_eq!(twin("10.0.0.1:15006"), None);
        assert_eq!(twin("[::1]:15001"), None);
    }

    #[tokio::test]
    async fn the_twin_listens_beside_its_ipv4_listener() {
        // A free port for both families (the twin shares the port number).
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = v4.local_addr().expect("addr").port();
        let Some(l) = bind("outbound", SocketAddr::from(([127, 0, 0, 1], port))) else {
            // No IPv6 on this host, or the port is taken there: nothing to show.
            return;
        };
        assert_eq!(
            l.local_addr().expect("addr").to_string(),
            format!("[::1]:{port}")
        );
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(("::1", port)), l.accept());
        assert!(client.is_ok() && accepted.is_ok());
    }
}
