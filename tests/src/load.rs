//! A steady request load through a proxy for tests that change things
//! underneath it: paced keep-alive HTTP/1.1 workers that record, for every
//! request, when it was sent, which upstream answered (`x-upstream`) and
//! whether it failed.

use crate::client::Conn;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent: Instant,
    /// The answering upstream, or the failure (status or error).
    pub outcome: Result<String, String>,
}

/// Running workers; [`Load::stop`] ends them and returns every sample.
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` connections to `proxy`, each sending `GET /` with `host`
    /// every `every`. A failed connection is replaced (its failure recorded).
    pub fn start(proxy: SocketAddr, host: &str, workers: usize, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let workers = (0..workers)
            .map(|_| {
                let (stop, samples, host) = (stop.clone(), samples.clone(), host.to_string());
                tokio::spawn(async move {
                    let mut conn: Option<Conn> = None;
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let sent = Instant::now();
                        let outcome = once(&mut conn, proxy, &host).await;
                        if outcome.is_err() {
                            conn = None;
                        }
                        samples.lock().unwrap().push(Sample { sent, outcome });
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            workers,
        }
    }

    /// Samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Requests answered so far.
    pub fn count(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    /// Ends the workers (after their request in flight) and returns every
    /// sample.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let samples = self.samples.lock().unwrap();
        samples.clone()
    }
}

async fn once(conn: &mut Option<Conn>, proxy: SocketAddr, host: &str) -> Result<String, String> {
    if conn.is_none() {
        *conn = Some(
            Conn::open(proxy)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let c = conn.as_mut().ok_or("no connection")?;
    let req = Request::get("/")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(Duration::from_secs(10), c.send(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.text()));
    }
    Ok(r.header("x-upstream").unwrap_or_default().to_string())
}

/// The failures among `samples`, for an assertion message.
pub fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err().cloned())
        .collect()
}

/// The last time a request answered by `upstream` was sent, if any.
pub fn last_sent_to(samples: &[Sample], upstream: &str) -> Option<Instant> {
    samples
        .iter()
        .filter(|s| s.outcome.as_deref() == Ok(upstream))
        .map(|s| s.sent)
        .max()
}
