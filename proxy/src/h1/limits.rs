//! How much of a message the codec takes before it gives up on it.

/// Most header fields in a head: as many as hyper's server takes.
pub(super) const MAX_HEADERS: usize = 100;
/// Largest response head accepted (status line and headers). Request heads
/// are bounded by the server's configured limit instead.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions).
pub(super) const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer block after a chunked body.
pub(super) const MAX_TRAILERS: usize = 16 * 1024;
