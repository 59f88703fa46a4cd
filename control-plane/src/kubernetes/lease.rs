//! Which replica writes status: the holder of the `coordination.k8s.io/v1`
//! Lease `weft-control-plane-status` in the control plane's namespace.
//! Every replica serves proxies; only the holder writes, so replicas do
//! not fight over `status` fields.
//!
//! Each replica tries every `duration / 5` (at most 2 s apart while it
//! does not hold it): it creates the Lease when
//! there is none, renews it while it holds it, and takes it over once it
//! has expired — by its `renewTime` plus `leaseDurationSeconds`, or when
//! this replica has seen it unchanged for a whole duration (a holder with
//! a skewed clock still loses it). Every write is an update carrying the
//! resourceVersion read, so of two replicas racing only one wins (409 for
//! the other). A holder that cannot renew for two thirds of a duration
//! stops writing before another may take over. On shutdown the holder
//! gives the Lease up ([`Release`]), so another replica takes over at its
//! next try instead of after a whole duration.

use crate::state::KubernetesStatus as Status;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use weft_mesh::process::lock;

/// How often a replica not holding the Lease looks at it, at most.
const RETRY: Duration = Duration::from_secs(2);

/// The Lease's name (see CONTRACT.md).
pub(crate) const NAME: &str = "weft-control-plane-status";

/// This replica's holder identity: `POD_NAME` (unique in a cluster), else
/// the host name with the process id (replicas may share a host).
pub(crate) fn identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let host = unsafe {
        if libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            "unknown".to_string()
        }
    };
    format!("{host}_{}", std::process::id())
}

/// Gives the Lease up on shutdown (see [`Release::release`]).
#[derive(Clone)]
pub(crate) struct Release {
    api: Api<Lease>,
    me: String,
    /// Held across each attempt; `None` once released (no more attempts).
    turn: Arc<tokio::sync::Mutex<Option<()>>>,
}

impl Release {
    /// Stops competing and, if this replica holds the Lease, empties its
    /// holder so another replica takes it at once.
    pub(crate) async fn release(&self) {
        let mut turn = self.turn.lock().await;
        *turn = None;
        let Ok(Some(mut lease)) = self.api.get_opt(NAME).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(NAME, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = NAME, "status writer: Lease released"),
            Err(e) => tracing::warn!(lease = NAME, "releasing the Lease: {e}"),
        }
    }
}

/// Keeps trying to hold the Lease; the receiver says whether this replica
/// holds it now.
pub(crate) fn start(
    client: Client,
    namespace: String,
    duration: Duration,
    status: Arc<Status>,
) -> (watch::Receiver<bool>, Release) {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let me = identity();
    tracing::info!(identity = %me, lease = NAME, namespace = %namespace, "status writer: competing for the Lease");
    let release = Release {
        api: api.clone(),
        me: me.clone(),
        turn: Arc::new(tokio::sync::Mutex::new(Some(()))),
    };
    let turn = release.turn.clone();
    tokio::spawn(async move {
        let mut seen: Option<(String, Instant)> = None;
        let mut renewed: Option<Instant> = None;
        loop {
            let guard = turn.lock().await;
            if guard.is_none() {
                tx.send_replace(false);
                status.status_writer.store(false, Ordering::Relaxed);
                return;
            }
            let outcome = attempt(&api, &me, duration, &mut seen).await;
            drop(guard);
            let held = match outcome {
                Ok(held) => {
                    *lock(&status.lease_error) = None;
                    if held {
                        renewed = Some(Instant::now());
                    }
                    held
                }
                Err(e) => {
                    tracing::warn!(lease = NAME, "{e}");
                    *lock(&status.lease_error) = Some(e);
                    // Still ours while another cannot have taken it yet.
                    renewed.is_some_and(|t| t.elapsed() < duration * 2 / 3)
                }
            };
            if !held {
                renewed = None;
            }
            if held != *tx.borrow() {
                if held {
                    tracing::info!(identity = %me, lease = NAME, "status writer: holding the Lease; writing status");
                } else {
                    tracing::info!(identity = %me, lease = NAME, "status writer: not holding the Lease; another replica writes status");
                }
                status.status_writer.store(held, Ordering::Relaxed);
                tx.send_replace(held);
            }
            // The holder renews every fifth of a duration; the others look
            // at least every 2 s, so a released Lease is taken soon.
            let every = if held {
                duration / 5
            } else {
                (duration / 5).min(RETRY)
            };
            tokio::time::sleep(every).await;
        }
    });
    (rx, release)
}

/// One round: `Ok(true)` when this replica holds the Lease after it.
async fn attempt(
    api: &Api<Lease>,
    me: &str,
    duration: Duration,
    seen: &mut Option<(String, Instant)>,
) -> Result<bool, String> {
    let now = Timestamp::now();
    let secs = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let current = match api.get_opt(NAME).await {
        Ok(l) => l,
        Err(e) => return Err(describe("get", &e)),
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(NAME.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.to_string()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(describe("create", &e)),
        };
    };
    let rv = lease.metadata.resource_version.clone().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    // How long this replica has seen this very version of the Lease.
    let unchanged_for = match seen {
        Some((v, since)) if *v == rv => since.elapsed(),
        _ => {
            *seen = Some((rv.clone(), Instant::now()));
            Duration::ZERO
        }
    };
    let held_for =
        SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(secs)));
    let expired = holder.is_empty()
        || spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0.checked_add(held_for).is_ok_and(|end| end < now))
        || unchanged_for > duration;
    if holder != me && !expired {
        return Ok(false);
    }
    if holder != me {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(MicroTime(now));
        spec.holder_identity = Some(me.to_string());
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(secs);
    match api.replace(NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(describe("update", &e)),
    }
}

fn describe(verb: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden to {verb} the Lease {NAME}: grant the control plane's ServiceAccount get, create and update on leases.coordination.k8s.io in its namespace ({e}); no status is written meanwhile"
        ),
        _ => format!("status Lease {NAME}: {verb}: {e}; retrying"),
    }
}
