//! Applying a backend's injected fault (TrafficPolicy `fault`) to one
//! outbound request, after its backend is chosen and before any try: a
//! delay is waited out here, and an abort is answered here, so it never
//! reaches the upstream, never counts against the retry budget or the
//! outlier detector, and is never retried.

use crate::body::RequestBody;
use crate::http::errors::ProxyError;
use crate::http::observe::Observer;
use crate::resilience::fault::Fault;
use http::Request;
use std::time::Duration;

/// Waits out a drawn delay, then answers a drawn abort as an error. A delay
/// at or beyond the rule's request timeout ends the request as that
/// timeout would (504 `upstream-timeout`) once the timeout has passed.
pub(crate) async fn inject(
    f: &Fault,
    req: &Request<RequestBody>,
    request_timeout: Option<Duration>,
    obs: &mut Observer<'_>,
) -> Result<(), ProxyError> {
    if !f.applies(req.headers()) {
        return Ok(());
    }
    let draw = f.draw();
    if let Some(d) = draw.delay {
        f.delays.inc();
        obs.delay_injected();
        match request_timeout {
            Some(t) if d >= t => {
                tokio::time::sleep(t).await;
                return Err(ProxyError::Timeout(t));
            }
            _ => tokio::time::sleep(d).await,
        }
    }
    match draw.abort {
        Some(a) => {
            f.aborts.inc();
            obs.abort_injected();
            Err(ProxyError::FaultAbort {
                status: a.status,
                grpc: a.grpc,
            })
        }
        None => Ok(()),
    }
}
