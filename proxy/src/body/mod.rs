//! The body types that flow through the proxy. Bodies stream: nothing is
//! buffered but what a retry needs (capped) and the few frames read ahead
//! to see a gRPC status.

pub(crate) mod pace;
pub(crate) mod peek;
pub(crate) mod replay;
mod request;
mod response;
pub(crate) mod tee;

pub(crate) use request::RequestBody;
pub(crate) use response::ResponseBody;

/// An error while streaming a body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
#[cfg(test)]
mod size_tmp {
    #[test]
    fn sizes() {
        eprintln!(
            "SIZES RequestBody={} ResponseBody={} Paced={} Incoming={} Req={}",
            std::mem::size_of::<super::RequestBody>(),
            std::mem::size_of::<super::ResponseBody>(),
            std::mem::size_of::<super::pace::Paced>(),
            std::mem::size_of::<hyper::body::Incoming>(),
            std::mem::size_of::<http::Request<super::RequestBody>>()
        );
    }
}
