//! Graceful shutdown: a signal every connection watches, and a count of
//! connections still open that shutdown waits on.
//!
//! Each connection holds a [`Watch`]; shutdown flips the signal, connections
//! finish their in-flight requests and drop their watch, and [`Drain::drained`]
//! resolves when the last one is gone.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The owner's half: triggers shutdown and waits for connections to finish.
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

/// A connection's half: tells it when to stop, and keeps the drain open while held.
#[derive(Clone)]
pub(crate) struct Watch {
    signal: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub(crate) fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            signal,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A watch for one more connection or task.
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            signal: self.signal.subscribe(),
            // Only None after `drain`, which consumes self.
            _alive: self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
        }
    }

    /// Signals every watcher and waits up to `grace` for them to finish.
    /// Returns false if the grace period ran out first.
    pub(crate) async fn drain(mut self, grace: Duration) -> bool {
        let _ = self.signal.send(true);
        self.done_tx = None;
        tokio::time::timeout(grace, self.done_rx.recv())
            .await
            .is_ok()
    }
}

impl Watch {
    /// Resolves once shutdown has been signalled.
    pub(crate) async fn signalled(&mut self) {
        let _ = self.signal.wait_for(|v| *v).await;
    }

    pub(crate) fn is_signalled(&self) -> bool {
        *self.signal.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_watchers_then_times_out() {
        let drain = Drain::new();
        let mut w = drain.watch();
        let task = tokio::spawn(async move {
            w.signalled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(w);
        });
        assert!(drain.drain(Duration::from_secs(5)).await);
        task.await.unwrap();

        let drain = Drain::new();
        let _stuck = drain.watch();
        assert!(!drain.drain(Duration::from_secs(1)).await);
    }
}
