//! The request path: what happens to one HTTP request between a listener
//! and an upstream — routing ([`outbound`], [`inbound`]), what a rule does
//! to it ([`rewrite`]), copies for a mirror ([`mirror`]), injected faults ([`fault`]), retries ([`retry`]), one exchange with one endpoint
//! ([`forward`]), CONNECT tunnels ([`connect`]), the proxy's own error
//! answers ([`errors`]), and what the request leaves behind in metrics,
//! logs and traces ([`observe`]).

pub(crate) mod checks;
pub(crate) mod connect;
pub(crate) mod errors;
pub(crate) mod failure;
pub(crate) mod fault;
pub(crate) mod forward;
pub(crate) mod headers;
pub(crate) mod inbound;
pub(crate) mod mirror;
pub(crate) mod observe;
pub(crate) mod outbound;
pub(crate) mod retry;
pub(crate) mod rewrite;
pub(crate) mod within;

use std::net::SocketAddr;
use std::sync::Arc;

/// What we know of the connection a request came on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// Where the client was really going, for connections redirected to us.
    pub(crate) orig_dst: Option<SocketAddr>,
    /// `orig_dst` as a name (`IP:port`), on an intercepted outbound
    /// connection: requests are routed by the Service at that address when
    /// there is one, whatever their Host says. Made once per connection.
    pub(crate) orig_name: Option<Box<str>>,
    /// The client's verified SPIFFE ID, on an inbound mTLS connection.
    pub(crate) peer_identity: Option<Arc<str>>,
}
