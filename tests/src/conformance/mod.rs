//! Hostile-input conformance: raw-socket cases of message framing and
//! authority, on both sides of the proxy, and the peers (HAProxy, Envoy)
//! the same request-side cases run against.

pub mod h2;
pub mod peers;
pub mod raw;
pub mod request_cases;
pub mod response_cases;
pub mod run;
pub mod run_response;
