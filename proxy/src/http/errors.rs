//! Errors the proxy answers itself, each with a status, a short text body and
//! an `x-weft-error` header naming the cause, so a user reading a response
//! (or a log) knows which hop failed and why.

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
        }
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
