//! Recovery of the destination an intercepted client originally dialled.
//!
//! With transparent interception (`weft-proxy iptables`), the kernel's NAT REDIRECT rewrites
//! the app's connection to the proxy's listener; conntrack still remembers the address the
//! app asked for, and `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it back so the
//! proxy can forward the connection where the app meant it to go.

use std::net::SocketAddr;

/// The destination the client originally dialled, if this connection was redirected by
/// iptables (NAT REDIRECT); `None` when it was not redirected (the original destination
/// equals the local address) or the option is unavailable (no conntrack entry, not Linux).
pub(crate) fn original_dst(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let orig = lookup(stream)?;
    let orig = SocketAddr::new(orig.ip().to_canonical(), orig.port());
    if orig == SocketAddr::new(local.ip().to_canonical(), local.port()) {
        None
    } else {
        Some(orig)
    }
}

/// Asks conntrack through the option of the connection's family: `SO_ORIGINAL_DST` (level
/// `SOL_IP`) for IPv4, which also answers for IPv4-mapped connections on a dual-stack
/// socket, and `IP6T_SO_ORIGINAL_DST` (level `SOL_IPV6` = 41, optname 80) for IPv6, where
/// an ip6tables REDIRECT leaves its entry.
#[cfg(target_os = "linux")]
fn lookup(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let v4 = || sock.original_dst_v4().ok().and_then(|a| a.as_socket());
    let v6 = || sock.original_dst_v6().ok().and_then(|a| a.as_socket());
    match stream.local_addr().ok()? {
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none() => v6(),
        SocketAddr::V6(_) => v4().or_else(v6),
        SocketAddr::V4(_) => v4(),
    }
}

#[cfg(not(target_os = "linux"))]
fn lookup(_stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn plain_loopback_connection_is_not_redirected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        assert_eq!(original_dst(&server), None);
    }

    #[tokio::test]
    async fn ipv6_loopback_connection_is_not_redirected() {
        // Hosts without IPv6 cannot run this; that is not what is being tested.
        let Ok(listener) = TcpListener::bind("[::1]:0").await else {
            return;
        };
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        assert_eq!(original_dst(&server), None);
    }
}
