//! On-demand names: the control plane sends a proxy only the names it has
//! asked for, so a request for a name the scoped config lacks asks for it
//! on the open watch and waits (briefly) for the answer.
//!
//! The control plane answers every message a proxy sends up (its hello,
//! each want) with one message down, in order, so a want is answered once
//! as many answers arrived as were outstanding when it was sent. A want
//! sent on a watch that dies unanswered (its replica went away) is not
//! lost: every new watch's hello names all wants, so the answer to that
//! hello answers it, within the same wait.
//!
//! An intercepted connection's original destination is asked about the
//! same way, as the name `IP:port` (the control plane answers with the
//! Service whose ClusterIP it is). A name asked about stays wanted: the
//! answer, found or not, is not asked again, and a Service that appears
//! later is sent. A second request (or connection) for a name whose answer
//! is still coming waits for that same answer.

use crate::proxy::NameLookup;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use weft_mesh::api::{self, WatchUp};
use weft_mesh::process::lock;

/// How long a request for an unknown name waits for the control plane.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);
/// Most names one proxy asks for.
pub(super) const MAX_WANTS: usize = 10_000;
/// Longest name asked about.
const MAX_NAME: usize = 300;
/// Most of those wants that are addresses (`IP:port`): an app that dials
/// many IPs that are no Service must not use up the room names need.
const MAX_ADDRESS_WANTS: usize = 2_000;

/// The names asked for, and the watch they are asked on.
pub(crate) struct Lookups {
    /// Names the app called that the config did not have (named again in
    /// the hello of every new watch), and how many of them are addresses.
    wants: Mutex<Wants>,
    /// Wants whose answer is still coming, and where they were sent.
    pending: Mutex<HashMap<String, Sent>>,
    /// The open watch and what it owes.
    up: Mutex<Upward>,
    /// Rings on every answer from the control plane (snapshots and
    /// settlements), so a request waiting on a want looks again.
    answers: watch::Sender<()>,
}

/// The open watch's upward side.
#[derive(Default)]
struct Upward {
    tx: Option<mpsc::Sender<Bytes>>,
    /// Counts watches attached: a want outlives the watch it was sent on.
    generation: u64,
    /// Messages sent up on this watch not answered yet (its hello first).
    outstanding: u64,
    /// This watch's hello has been answered.
    hello_answered: bool,
    /// Answers received, on every watch.
    answers: u64,
}

/// The names asked for.
#[derive(Default)]
struct Wants {
    names: BTreeSet<String>,
    addresses: usize,
}

/// Where a want was sent, to tell when it has been answered.
#[derive(Clone, Copy)]
struct Sent {
    generation: u64,
    /// The answer count that answers it on that watch (none if it could
    /// not be sent there: the next watch's hello answers it).
    answer: Option<u64>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            wants: Mutex::new(Wants::default()),
            pending: Mutex::new(HashMap::new()),
            up: Mutex::new(Upward::default()),
            answers: watch::channel(()).0,
        }
    }
}

impl Lookups {
    /// Wants go out on this new watch from now on, after the hello
    /// `hello` makes of every name asked for so far (queued first on `up`,
    /// which must be empty; false if it could not be).
    pub(super) fn attach(
        &self,
        up: mpsc::Sender<Bytes>,
        hello: impl FnOnce(Vec<String>) -> Bytes,
    ) -> bool {
        let mut upward = lock(&self.up);
        let names = lock(&self.wants).names.iter().cloned().collect();
        if up.try_send(hello(names)).is_err() {
            return false;
        }
        upward.tx = Some(up);
        upward.generation += 1;
        upward.outstanding = 1;
        upward.hello_answered = false;
        true
    }

    /// The control plane answered (a snapshot, or "nothing changed").
    pub(super) fn answered(&self) {
        {
            let mut upward = lock(&self.up);
            upward.outstanding = upward.outstanding.saturating_sub(1);
            upward.hello_answered = true;
            upward.answers += 1;
        }
        // Not under the lock: a waiter reads it while holding the watch.
        self.answers.send_replace(());
    }

    /// Asks about `authority`; true once the control plane has answered
    /// (or the wait ran out: either way the caller looks again). A name
    /// whose answer is still coming waits for it; one answered already is
    /// false at once, as is one over the limits.
    async fn ask(&self, authority: &str) -> bool {
        let name = authority.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > MAX_NAME {
            return false;
        }
        let mut answers = self.answers.subscribe();
        let sent = {
            let mut wants = lock(&self.wants);
            if wants.names.contains(&name) {
                match lock(&self.pending).get(&name) {
                    Some(sent) => Some(*sent),
                    None => return false,
                }
            } else {
                let address = name.parse::<std::net::SocketAddr>().is_ok();
                if wants.names.len() >= MAX_WANTS
                    || (address && wants.addresses >= MAX_ADDRESS_WANTS)
                {
                    return false;
                }
                wants.addresses += usize::from(address);
                wants.names.insert(name.clone());
                None
            }
        };
        let sent = match sent {
            Some(sent) => sent,
            None => {
                let line = api::line(&WatchUp::Want {
                    names: vec![name.clone()],
                });
                let mut upward = lock(&self.up);
                // Queued now (never waiting under the lock); a full or
                // closed channel leaves the want to the next watch's hello.
                let queued = upward
                    .tx
                    .as_ref()
                    .is_some_and(|tx| tx.try_send(line).is_ok());
                if queued {
                    upward.outstanding += 1;
                }
                let sent = Sent {
                    generation: upward.generation,
                    answer: queued.then_some(upward.answers + upward.outstanding),
                };
                lock(&self.pending).insert(name.clone(), sent);
                sent
            }
        };
        let answered = |_: &()| {
            let upward = lock(&self.up);
            if upward.generation == sent.generation {
                sent.answer.is_some_and(|a| upward.answers >= a)
            } else {
                // A later watch: its hello named this want.
                upward.hello_answered
            }
        };
        let _ = tokio::time::timeout(DISCOVERY_WAIT, answers.wait_for(answered)).await;
        lock(&self.pending).remove(&name);
        true
    }
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
mod tests;
