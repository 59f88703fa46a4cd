//! Connections to upstream endpoints, below HTTP semantics: opening them
//! (TCP with a deadline, under a backend's limits, mTLS to a mesh peer),
//! starting hyper's HTTP/1 and HTTP/2 clients on them, and keeping them per
//! endpoint for the next request.
//!
//! It exists so that the layers above (the HTTP/1 codec, forwarding, opaque
//! TCP, health checks) share one way of connecting, and so that none of this
//! knows what a request means: the pool is generic over the request body
//! type hyper's clients carry, and the lean HTTP/1 client's connections are
//! kept here as plain sockets with their read buffers.

mod connect;
mod handshake;
mod pool;
mod queue;
mod raw;

pub(crate) use connect::{connect_tcp, tls_handshake, ConnectError, PoolSettings};
pub(crate) use pool::{Pool, Reusable};
pub(crate) use raw::RawConn;
