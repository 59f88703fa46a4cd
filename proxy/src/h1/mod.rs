//! The hand-written HTTP/1.1 codec, both halves: the server's fast path for
//! bodiless requests (`server`) and the lean client for bodiless requests to
//! upstreams (`client`). Everything else goes to hyper.
//!
//! It exists so the two halves share one copy of what HTTP/1 itself says —
//! limits, token lists, chunked framing, which fields are hop-by-hop, which
//! methods are idempotent — and so that neither knows the proxy: the server
//! is given limits and a service to call, the client a pooled connection and
//! a request, and both are generic over the body types they carry.

pub(crate) mod client;
pub(crate) mod server;

mod chunked;
pub(crate) mod framing;
mod head;
mod hop;
mod limits;
mod method;
pub(crate) mod tokens;

pub(crate) use hop::{names_protected, strip_hop_by_hop, strip_trailer_fields};
pub(crate) use method::idempotent;
