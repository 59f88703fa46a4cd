//! The request path: what happens to one HTTP request between a listener
//! and an upstream — routing ([`outbound`], [`inbound`]), what a rule does
//! to it ([`rewrite`]), retries ([`retry`]), one exchange with one endpoint
//! ([`forward`]), CONNECT tunnels ([`connect`]), the proxy's own error
//! answers ([`errors`]), and what the request leaves behind in metrics,
//! logs and traces ([`observe`]).

pub mod connect;
pub mod errors;
pub mod failure;
pub mod forward;
pub mod headers;
pub mod inbound;
pub mod observe;
pub mod outbound;
pub mod retry;
pub mod rewrite;
pub mod within;

use std::net::SocketAddr;
use std::sync::Arc;

/// What we know of the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Where the client was really going, for connections redirected to us.
    pub orig_dst: Option<SocketAddr>,
    /// The client's verified SPIFFE ID, on an inbound mTLS connection.
    pub peer_identity: Option<Arc<str>>,
}
