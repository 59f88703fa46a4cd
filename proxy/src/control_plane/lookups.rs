//! On-demand names: the control plane sends a proxy only the names it has
//! asked for, so a request for a name the scoped config lacks asks for it
//! on the open watch and waits (briefly) for the answer. An intercepted
//! connection's original destination is asked about the same way, as the
//! name `IP:port` (the control plane answers with the Service whose
//! ClusterIP it is). A name asked about stays wanted: the answer, found or
//! not, is not asked again, and a Service that appears later is sent.

use crate::proxy::NameLookup;
use bytes::Bytes;
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weft_mesh::api::{self, WatchUp};
use weft_mesh::process::lock;

/// How long a request for an unknown name waits for the control plane.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);
/// Most names one proxy asks for.
const MAX_WANTS: usize = 10_000;
/// Longest name asked about.
const MAX_NAME: usize = 300;
/// Most of those wants that are addresses (`IP:port`): an app that dials
/// many IPs that are no Service must not use up the room names need.
const MAX_ADDRESS_WANTS: usize = 2_000;

/// The names asked for, and the watch they are asked on.
pub(crate) struct Lookups {
    /// Names the app called that the config did not have (named again in
    /// the hello of every new watch).
    wants: Mutex<BTreeSet<String>>,
    /// The open watch's upward channel.
    up: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Counts answers from the control plane (snapshots and settlements),
    /// so a request waiting on a want knows when it has been answered.
    answers: watch::Sender<u64>,
    /// How many of `wants` are addresses (changed under its lock).
    addresses: AtomicUsize,
    /// Wants sent and not answered yet: a second connection or request for
    /// one waits for the same answer instead of going on without it.
    pending: Mutex<HashSet<String>>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            wants: Mutex::new(BTreeSet::new()),
            up: Mutex::new(None),
            answers: watch::channel(0).0,
            addresses: AtomicUsize::new(0),
            pending: Mutex::new(HashSet::new()),
        }
    }
}

impl Lookups {
    /// Every name asked for so far.
    pub(super) fn wanted(&self) -> Vec<String> {
        lock(&self.wants).iter().cloned().collect()
    }

    /// Wants go out on this watch from now on.
    pub(super) fn attach(&self, up: mpsc::Sender<Bytes>) {
        *lock(&self.up) = Some(up);
    }

    /// The control plane answered (a snapshot, or "nothing changed").
    pub(super) fn answered(&self) {
        lock(&self.pending).clear();
        self.answers.send_modify(|n| *n += 1);
    }

    /// Asks about `authority`; true once the control plane has answered.
    /// A name already asked about waits for the answer if it is still
    /// coming, else is false at once; false with no watch open.
    async fn ask(&self, authority: &str) -> bool {
        let name = authority.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > MAX_NAME {
            return false;
        }
        // Subscribed before looking, so an answer in between is not missed.
        let mut answers = self.answers.subscribe();
        answers.borrow_and_update();
        let asked = {
            let mut wants = lock(&self.wants);
            if wants.contains(&name) {
                Some(lock(&self.pending).contains(&name))
            } else {
                if wants.len() >= MAX_WANTS {
                    return false;
                }
                if name.parse::<std::net::SocketAddr>().is_ok() {
                    if self.addresses.load(Ordering::Relaxed) >= MAX_ADDRESS_WANTS {
                        return false;
                    }
                    self.addresses.fetch_add(1, Ordering::Relaxed);
                }
                wants.insert(name.clone());
                lock(&self.pending).insert(name.clone());
                None
            }
        };
        if let Some(coming) = asked {
            return coming && wait(answers).await;
        }
        let Some(up) = lock(&self.up).clone() else {
            lock(&self.pending).remove(&name);
            return false;
        };
        let want = WatchUp::Want {
            names: vec![name.clone()],
        };
        if up.send(api::line(&want)).await.is_err() {
            lock(&self.pending).remove(&name);
            return false;
        }
        wait(answers).await
    }
}

/// True once the control plane answers, within [`DISCOVERY_WAIT`].
async fn wait(mut answers: watch::Receiver<u64>) -> bool {
    tokio::time::timeout(DISCOVERY_WAIT, answers.changed())
        .await
        .is_ok_and(|r| r.is_ok())
}

impl NameLookup for Lookups {
    fn discover<'a>(
        &'a self,
        authority: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(self.ask(authority))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_cannot_crowd_out_names() {
        let l = Lookups::default();
        for i in 0..MAX_ADDRESS_WANTS + 5 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
            // No watch open: false, but the want is kept for the next hello.
            assert!(!l.ask(&format!("{ip}:80")).await);
        }
        assert!(!l.ask("reviews.shop").await);
        let wanted = l.wanted();
        assert_eq!(wanted.len(), MAX_ADDRESS_WANTS + 1);
        assert!(wanted.contains(&"reviews.shop".to_string()));
        assert!(wanted.contains(&"10.0.0.0:80".to_string()));
    }

    #[tokio::test]
    async fn a_second_ask_waits_for_the_answer_to_the_first() {
        let l = std::sync::Arc::new(Lookups::default());
        let (tx, mut rx) = mpsc::channel(4);
        l.attach(tx);
        let first = tokio::spawn({
            let l = l.clone();
            async move { l.ask("10.96.0.1:80").await }
        });
        // The want went up; a second ask for it waits rather than failing.
        let line = rx.recv().await.expect("the want");
        assert!(String::from_utf8_lossy(&line).contains("10.96.0.1:80"));
        let second = tokio::spawn({
            let l = l.clone();
            async move { l.ask("10.96.0.1:80").await }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        l.answered();
        assert!(first.await.unwrap());
        assert!(second.await.unwrap());
        // Answered: asking again is false at once, and sends nothing.
        assert!(!l.ask("10.96.0.1:80").await);
        assert!(rx.try_recv().is_err());
    }
}
