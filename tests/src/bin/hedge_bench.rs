//! The hedging benchmark's driver (run by `tests/bench/hedge.sh`): three
//! upstreams, one of which answers 200 ms late 10 % of the time, behind two
//! weft-proxy processes with the same config except `hedge` (one without,
//! one with). A fixed request rate goes through each in turn, in
//! interleaved phases, so the noise of a shared machine falls on both
//! alike. Latency is measured from each request's scheduled send time
//! (open loop: a late answer does not delay the next request).
//!
//! Prints, per proxy: requests, errors, p50/p90/p99/p99.9/max, and the
//! upstream requests per client request (the extra load of hedging).
//!
//! Environment: `WEFT_PROXY_BIN` (the proxy to run; default next to this
//! binary), `RATE` [200] req/s, `PHASE` [10] s, `ROUNDS` [3], `SLOW_MS`
//! [200], `SLOW_PCT` [10], `HEDGE` [`{percentile: 95}`], `LB` [RoundRobin: the slow endpoint
//! gets its third of the requests; PeakEWMA would steer load away from it],
//! `WORKERS` [1].

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use weft_tests::{Conn, Proxy};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// An HTTP/1.1 upstream that counts requests and, when `slow_pct` > 0,
/// answers that share of them `slow` late.
async fn upstream(slow: Duration, slow_pct: u32) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let c = c.clone();
                    async move {
                        c.fetch_add(1, Ordering::Relaxed);
                        if slow_pct > 0 && rand::random::<u32>() % 100 < slow_pct {
                            tokio::time::sleep(slow).await;
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok\n"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

fn config(eps: &[SocketAddr], lb: &str, hedge: Option<&str>) -> String {
    let list: Vec<String> = eps
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    let hedge = hedge.map(|h| format!("  hedge: {h}\n")).unwrap_or_default();
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{}]\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  loadBalancer: {{policy: {lb}}}\n{hedge}",
        list.join(", ")
    )
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    upstream: u64,
}

/// `rate` GETs per second to `proxy` for `secs`; each result lands in
/// `tally` (when given) as it comes. Idle keep-alive connections are reused.
async fn phase(proxy: SocketAddr, rate: u32, secs: u64, tally: Option<Arc<Mutex<Tally>>>) {
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let n = rate as u64 * secs;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = start + every * i as u32;
        tokio::time::sleep_until(at).await;
        let (idle, tally) = (idle.clone(), tally.clone());
        tasks.spawn(async move {
            let conn = idle.lock().unwrap().pop();
            let conn = match conn {
                Some(c) => Ok(c),
                None => Conn::open(proxy).await,
            };
            let req = Request::get("/")
                .header("host", "svc")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let ok = match conn {
                Ok(mut c) => match c.send(req).await {
                    Ok(r) if r.status == 200 => {
                        idle.lock().unwrap().push(c);
                        true
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            if let Some(t) = tally {
                let mut t = t.lock().unwrap();
                match ok {
                    true => t.latencies.push(at.elapsed()),
                    false => t.errors += 1,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate: u32 = env("RATE", 200);
    let secs: u64 = env("PHASE", 10);
    let rounds: u32 = env("ROUNDS", 3);
    let slow = Duration::from_millis(env("SLOW_MS", 200));
    let slow_pct: u32 = env("SLOW_PCT", 10);
    let hedge: String = env("HEDGE", "{percentile: 95}".to_string());
    let workers: u32 = env("WORKERS", 1);
    let lb: String = env("LB", "RoundRobin".to_string());
    let ups = [
        upstream(slow, 0).await,
        upstream(slow, 0).await,
        upstream(slow, slow_pct).await,
    ];
    let eps: Vec<SocketAddr> = ups.iter().map(|u| u.0).collect();
    let upstream_total = || ups.iter().map(|u| u.1.load(Ordering::Relaxed)).sum::<u64>();
    let start = |h: Option<&str>| {
        Proxy::builder(config(&eps, &lb, h))
            .arg("--workers")
            .arg(workers.to_string())
            .start()
    };
    let proxies = [
        ("without hedging", start(None)),
        ("with hedging", start(Some(&hedge))),
    ];
    println!(
        "hedge bench: 3 endpoints, one {}ms late {slow_pct}% of the time; {rate} req/s, {rounds} x {secs}s per proxy, interleaved; loadBalancer {lb}; hedge: {hedge}",
        slow.as_millis()
    );
    // Warm-up: connections, and the latency window a percentile reads.
    for (_, p) in &proxies {
        phase(p.outbound, rate, 2, None).await;
    }
    let tallies: Vec<Arc<Mutex<Tally>>> = proxies.iter().map(|_| Arc::default()).collect();
    for round in 0..rounds {
        for (i, (name, p)) in proxies.iter().enumerate() {
            let before = upstream_total();
            phase(p.outbound, rate, secs, Some(tallies[i].clone())).await;
            let up = upstream_total() - before;
            tallies[i].lock().unwrap().upstream += up;
            eprintln!("round {} {name}: {up} upstream requests", round + 1);
        }
    }
    println!(
        "{:<16} {:>8} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8} {:>14}",
        "proxy",
        "requests",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "upstream/req"
    );
    for (i, (name, p)) in proxies.iter().enumerate() {
        let mut t = std::mem::take(&mut *tallies[i].lock().unwrap());
        t.latencies.sort();
        let n = t.latencies.len() as u64 + t.errors;
        println!(
            "{:<16} {:>8} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2} {:>14.3}",
            name,
            n,
            t.errors,
            pct(&t.latencies, 50.0),
            pct(&t.latencies, 90.0),
            pct(&t.latencies, 99.0),
            pct(&t.latencies, 99.9),
            pct(&t.latencies, 100.0),
            t.upstream as f64 / n.max(1) as f64,
        );
        let sent = p.metric("weft_hedges_total", &["result=\"sent\""]).await;
        let won = p.metric("weft_hedges_total", &["result=\"won\""]).await;
        let nb = p
            .metric("weft_hedges_total", &["result=\"no-budget\""])
            .await;
        if sent + nb > 0.0 {
            println!(
                "  hedges (whole run, warm-up included): sent {sent}, won {won}, no-budget {nb}"
            );
        }
    }
}
