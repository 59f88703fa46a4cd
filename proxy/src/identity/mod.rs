//! This workload's certificate in mesh mode: obtained at start, renewed
//! for the life of the process, published for the data path.
//!
//! The certificate comes from an [`Issuer`] (the control plane's CA, in
//! `control_plane::certificates`); this module only decides when to ask
//! and what to do with the answer. The first certificate is retried with
//! jittered backoff until it comes. Each is renewed at a random point of
//! the MeshConfig's `rotationPercent` window of its life (50–70 % by
//! default), so a fleet started together does not renew together; a failed
//! renewal keeps the current certificate and retries. Publishing is one
//! pointer swap (`Proxy::mesh`): new connections use the new certificate,
//! open ones carry on.

use crate::proxy::Proxy;
use crate::resilience::backoff;
use crate::tls::mesh::MeshTls;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Backoff between tries for a first certificate.
const FIRST_RETRY_BASE: Duration = Duration::from_millis(200);
const FIRST_RETRY_MAX: Duration = Duration::from_secs(15);
/// Backoff between tries to renew (there is time: the current one is valid).
const RENEW_RETRY_BASE: Duration = Duration::from_secs(1);
const RENEW_RETRY_MAX: Duration = Duration::from_secs(60);

/// A certificate and its validity.
pub(crate) struct Issued {
    pub(crate) mesh: MeshTls,
    /// When its life is counted from (for the renewal point).
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// Where certificates come from.
pub(crate) trait Issuer: Send + Sync {
    /// A new certificate: proven by `current` when there is one.
    fn issue<'a>(
        &'a self,
        current: Option<&'a MeshTls>,
    ) -> Pin<Box<dyn Future<Output = Result<Issued, String>> + Send + 'a>>;
}

/// Keeps the proxy's certificate current.
pub(crate) struct Manager {
    issuer: Arc<dyn Issuer>,
    proxy: Arc<Proxy>,
}

/// The validity of the certificate in force.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Validity {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl Manager {
    pub(crate) fn new(issuer: Arc<dyn Issuer>, proxy: Arc<Proxy>) -> Manager {
        Manager { issuer, proxy }
    }

    /// Obtains and publishes the first certificate, retrying until it comes.
    pub(crate) async fn first(&self) -> Validity {
        let mut attempt = 0;
        loop {
            match self.issuer.issue(None).await {
                Ok(issued) => return self.publish(issued, "mesh certificate obtained: mTLS on"),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "no certificate yet; retrying");
                    let wait = backoff::jittered(attempt, FIRST_RETRY_BASE, FIRST_RETRY_MAX);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Renews the certificate for the life of the process.
    pub(crate) async fn renew_forever(&self, mut validity: Validity) {
        loop {
            let window = self.proxy.snapshot.load().mesh.rotation_window;
            let at = renewal_at(validity.not_before, validity.not_after, window);
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            let mut attempt = 0;
            validity = loop {
                let current = self.proxy.mesh.load_full();
                match self.issuer.issue(current.as_deref()).await {
                    Ok(issued) => break self.publish(issued, "mesh certificate renewed"),
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "certificate renewal failed; keeping the current one");
                        // Once it has expired there is no identity left to
                        // keep: retry as urgently as for the first one.
                        let (base, max) = if SystemTime::now() >= validity.not_after {
                            (FIRST_RETRY_BASE, FIRST_RETRY_MAX)
                        } else {
                            (RENEW_RETRY_BASE, RENEW_RETRY_MAX)
                        };
                        let wait = backoff::jittered(attempt, base, max);
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                }
            };
        }
    }

    fn publish(&self, issued: Issued, what: &'static str) -> Validity {
        let expires = unix(issued.not_after);
        tracing::info!(identity = %issued.mesh.id, expires, "{what}");
        self.proxy.metrics.cert_expiry.set(expires as i64);
        self.proxy.mesh.store(Some(Arc::new(issued.mesh)));
        Validity {
            not_before: issued.not_before,
            not_after: issued.not_after,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// When to renew: a uniformly random point in `window` of the lifetime.
fn renewal_at(not_before: SystemTime, not_after: SystemTime, window: (f64, f64)) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::from_secs(60));
    let frac = window.0 + rand::random::<f64>() * (window.1 - window.0);
    not_before + life.mul_f64(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_lands_inside_the_window() {
        let nb = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let na = nb + Duration::from_secs(1000);
        for _ in 0..200 {
            let at = renewal_at(nb, na, (0.5, 0.7));
            let into = at.duration_since(nb).unwrap();
            assert!(into >= Duration::from_secs(500) && into <= Duration::from_secs(700));
        }
        assert_eq!(
            renewal_at(nb, na, (0.9, 0.9)),
            nb + Duration::from_secs(900)
        );
        // A certificate whose notAfter is before its notBefore still gets a
        // renewal point, not a panic.
        assert!(renewal_at(na, nb, (0.5, 0.5)) > na);
    }
}
