//! Errors the proxy answers itself, each with a status, a short text body and
//! an `x-weft-error` header naming the cause, so a user reading a response
//! (or a log) knows which hop failed and why. A gRPC call (`content-type:
//! application/grpc*`) gets the same as a gRPC status instead: HTTP 200,
//! trailers-only, `grpc-status` and `grpc-message`, so its client sees
//! UNIMPLEMENTED or UNAVAILABLE rather than a transport error.

use crate::body::ResponseBody;
use crate::transport::ConnectError;
use http::{HeaderValue, Response, StatusCode};

pub(crate) const ERROR_HEADER: &str = "x-weft-error";
/// Set on answers refused by a concurrency limit, so clients and their
/// retry logic can tell "shed at once" from "the upstream failed".
pub(crate) const OVERLOADED_HEADER: &str = "x-weft-overloaded";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no route for authority {0:?}")]
    NoRoute(String),
    #[error("no rule of {0} matches this request")]
    NoRuleMatch(String),
    #[error("the route has no backend to send to")]
    NoBackend,
    #[error("backend {0} has no endpoints")]
    NoEndpoints(String),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("upstream connection failed: {0}")]
    Upstream(hyper::Error),
    #[error("upstream connection failed: {0}")]
    UpstreamIo(std::io::Error),
    /// The upstream's answer cannot be relayed unambiguously (its framing,
    /// a 101 nobody asked for); its connection is not used again.
    #[error("the upstream's answer is malformed: {0}")]
    UpstreamProtocol(String),
    /// A pooled connection closed as the request went out; the request
    /// comes back to be sent again.
    #[error("upstream closed a pooled connection")]
    StaleConnection,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client sent its body too slowly, or stopped.
    #[error("{0}")]
    BodyTimeout(crate::body::pace::PaceError),
    #[error("forbidden by AuthorizationPolicy")]
    Forbidden,
    #[error("backend {0} is at its limit of concurrent {1}")]
    Overloaded(String, &'static str),
    #[error("the {0} listener is at its limit of {1} requests in flight")]
    ListenerOverloaded(&'static str, u64),
    /// A local rate limit of the inbound service refused (`retry-after`
    /// is added by the inbound path).
    #[error("rate limited ({} limit); retry in {}s", .0.limit.name(), .0.retry_after)]
    RateLimited(crate::resilience::rate_limit::Limited),
    /// An abort injected by a TrafficPolicy `fault`: this HTTP status, or
    /// this gRPC status to a gRPC call.
    #[error("fault injected by TrafficPolicy: abort")]
    FaultAbort { status: StatusCode, grpc: u8 },
}

impl ProxyError {
    /// Status and the short cause name used in `x-weft-error` and metrics.
    pub(crate) fn kind(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoRoute(_) | ProxyError::NoRuleMatch(_) => {
                (StatusCode::NOT_FOUND, "no-route")
            }
            ProxyError::NoBackend => (StatusCode::INTERNAL_SERVER_ERROR, "no-backend"),
            ProxyError::NoEndpoints(_) => (StatusCode::SERVICE_UNAVAILABLE, "no-endpoints"),
            ProxyError::Connect(ConnectError::Timeout(_)) => {
                (StatusCode::BAD_GATEWAY, "connect-timeout")
            }
            ProxyError::Connect(ConnectError::Overloaded(_))
            | ProxyError::Overloaded(..)
            | ProxyError::ListenerOverloaded(..) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ProxyError::Connect(_) => (StatusCode::BAD_GATEWAY, "connect-failed"),
            ProxyError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
            ProxyError::Upstream(_) | ProxyError::UpstreamIo(_) | ProxyError::StaleConnection => {
                (StatusCode::BAD_GATEWAY, "upstream-reset")
            }
            ProxyError::UpstreamProtocol(_) => (StatusCode::BAD_GATEWAY, "upstream-protocol"),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ProxyError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request-body-timeout"),
            ProxyError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ProxyError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ProxyError::FaultAbort { status, .. } => (*status, "fault-abort"),
        }
    }

    /// The gRPC status code for this error (see `grpc_response`).
    pub(crate) fn grpc_code(&self) -> u8 {
        const UNIMPLEMENTED: u8 = 12;
        const UNAVAILABLE: u8 = 14;
        const DEADLINE_EXCEEDED: u8 = 4;
        const PERMISSION_DENIED: u8 = 7;
        const INTERNAL: u8 = 13;
        const RESOURCE_EXHAUSTED: u8 = 8;
        match self {
            ProxyError::NoRoute(_) | ProxyError::NoRuleMatch(_) => UNIMPLEMENTED,
            ProxyError::NoBackend
            | ProxyError::NoEndpoints(_)
            | ProxyError::Connect(_)
            | ProxyError::Overloaded(..)
            | ProxyError::ListenerOverloaded(..)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamIo(_)
            | ProxyError::StaleConnection => UNAVAILABLE,
            ProxyError::Timeout(_) | ProxyError::BodyTimeout(_) => DEADLINE_EXCEEDED,
            ProxyError::Forbidden => PERMISSION_DENIED,
            ProxyError::UpstreamProtocol(_) | ProxyError::BadRequest(_) => INTERNAL,
            ProxyError::RateLimited(_) => RESOURCE_EXHAUSTED,
            ProxyError::FaultAbort { grpc, .. } => *grpc,
        }
    }

    /// The answer for a request: a gRPC status when `grpc` (the request
    /// was a gRPC call), else the HTTP error.
    pub(crate) fn respond(self, grpc: bool) -> Response<ResponseBody> {
        match grpc {
            true => self.into_grpc_response(),
            false => self.into_response(),
        }
    }

    /// A trailers-only gRPC answer: HTTP 200 whose headers end the stream
    /// and carry the status; `x-weft-error` names the cause as for HTTP.
    pub(crate) fn into_grpc_response(self) -> Response<ResponseBody> {
        let (_, cause) = self.kind();
        let mut resp = Response::new(ResponseBody::empty());
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(self.grpc_code() as u16));
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&self.to_string())) {
            h.insert("grpc-message", v);
        }
        h.insert(ERROR_HEADER, HeaderValue::from_static(cause));
        if cause == "overloaded" {
            h.insert(OVERLOADED_HEADER, HeaderValue::from_static("true"));
        }
        resp
    }

    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let (status, cause) = self.kind();
        let mut resp = Response::new(ResponseBody::full(format!("{self}\n")));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(ERROR_HEADER, HeaderValue::from_static(cause));
        if cause == "overloaded" {
            h.insert(OVERLOADED_HEADER, HeaderValue::from_static("true"));
        }
        resp
    }
}

/// Whether `req` is a gRPC call: a POST (every gRPC call is one, so a GET
/// is told apart without a header lookup) with `content-type:
/// application/grpc`, `application/grpc+proto`, `application/grpc-web`...
#[inline]
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    *req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and
/// `%` itself, as `%XX`.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_answers_are_trailers_only_statuses() {
        let resp = ProxyError::NoRoute("x".into()).into_grpc_response();
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert_eq!(resp.headers()["x-weft-error"], "no-route");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(
            ProxyError::Timeout(std::time::Duration::from_secs(1)).grpc_code(),
            4
        );
        assert_eq!(ProxyError::Forbidden.grpc_code(), 7);
        assert_eq!(ProxyError::NoEndpoints("b".into()).grpc_code(), 14);
        assert_eq!(grpc_message("a 100%\n\u{e9}"), "a 100%25%0A%C3%A9");
    }

    #[test]
    fn a_grpc_call_is_a_post_with_a_grpc_content_type() {
        let req = |method: &str, ct: &str| {
            http::Request::builder()
                .method(method)
                .header("content-type", ct)
                .body(())
                .unwrap()
        };
        assert!(is_grpc(&req("POST", "application/grpc")));
        assert!(is_grpc(&req("POST", "application/grpc+proto")));
        assert!(is_grpc(&req("POST", "application/grpc-web")));
        assert!(!is_grpc(&req("GET", "application/grpc")));
        assert!(!is_grpc(&req("POST", "application/json")));
    }
}
