//! The body types that flow through the proxy. Bodies stream: nothing is
//! buffered but what a retry needs (capped) and the few frames read ahead
//! to see a gRPC status.

pub mod peek;
pub mod replay;
mod request;
mod response;

pub use request::RequestBody;
pub use response::{BodyError, ResponseBody};

/// An error while streaming a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
