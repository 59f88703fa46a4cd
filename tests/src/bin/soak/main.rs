//! `soak`: the app and the load generator of the soak test (`tests/soak/run.sh`).
//!
//! ```text
//! soak app ADDR NAME [DELAY_MS]
//!                        an HTTP app on ADDR: a POST is answered with its
//!                        body's length, anything else with its request headers
//!                        as JSON, each DELAY_MS [0] after the request is read;
//!                        every answer says x-upstream: NAME
//! soak load --target ADDR --rps N --minutes N [options]
//! ```
//!
//! `load` sends GET /headers and POST /upload (a small body) at a fixed rate
//! over `--conns` keep-alive HTTP/1.1 connections to the client's sidecar,
//! checks every answer (2xx, the POST's length echoed, the caller's mesh
//! identity seen by the app), samples each `--sidecar NAME=PID@ADMIN` every
//! 2 s (/proc and the admin /metrics), and at the end writes a per-minute
//! Markdown report with a verdict. Exit status 0: pass, 1: fail.
//!
//! Options: `--host NAME` [app], `--conns N` [64], `--post-percent N` [50],
//! `--body BYTES` [512], `--timeout SECS` [10], `--identity SPIFFE-ID`,
//! `--events FILE` (lines `UNIX_MS KIND DETAIL` from run.sh, counted per
//! minute), `--report FILE`, `--jsonl FILE`, `--failures FILE` (the first
//! 500 failed requests, one a line), `--note TEXT` (a line under the report's
//! title; repeatable), `--warmup MINUTES` [2] (left out of the growth
//! checks), `--rss-pct N` [10] and `--rss-mib N` [2] (RSS may grow by the
//! larger), `--fd-slack N` [20], `--task-pct N` [20] (tasks may grow by that
//! or by 20, the larger). docs/SOAK.md says why.

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod report;
mod sample;
use report::{report, Carry, Row};
use sample::{sample, Sample};

/// A request more than this late is skipped: the generator is behind.
const MAX_LAG: Duration = Duration::from_secs(1);
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const FAILURES_LOGGED: u64 = 500;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("app") if (3..=4).contains(&args.len()) => {
            let addr: SocketAddr = args[1].parse().expect("soak app ADDR NAME [DELAY_MS]");
            let delay = args.get(3).map_or(0, |d| d.parse().expect("DELAY_MS"));
            rt.block_on(app(
                addr,
                Arc::from(args[2].as_str()),
                Duration::from_millis(delay),
            ));
            ExitCode::SUCCESS
        }
        Some("load") => match Opts::parse(&args[1..]) {
            Ok(o) => rt.block_on(load(Arc::new(o))),
            Err(e) => {
                eprintln!("soak load: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!(
                "usage: soak app ADDR NAME | soak load --target ADDR --rps N --minutes N ..."
            );
            ExitCode::from(2)
        }
    }
}

/// The app: serves until killed.
async fn app(addr: SocketAddr, name: Arc<str>, delay: Duration) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the app's port");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(name.clone(), delay, req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    name: Arc<str>,
    delay: Duration,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let len = body.collect().await.map_or(0, |b| b.to_bytes().len());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let text = if parts.method == Method::POST {
        len.to_string()
    } else {
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
            .collect();
        serde_json::Value::Object(headers).to_string()
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    Ok(resp)
}

struct Sidecar {
    name: String,
    pid: u32,
    admin: SocketAddr,
}

struct Opts {
    target: SocketAddr,
    host: String,
    rps: f64,
    minutes: u32,
    conns: usize,
    post_percent: u64,
    body: usize,
    timeout: Duration,
    identity: Option<String>,
    sidecars: Vec<Sidecar>,
    events: Option<String>,
    report: Option<String>,
    jsonl: Option<String>,
    failures: Option<String>,
    notes: Vec<String>,
    warmup: u32,
    rss_pct: f64,
    rss_mib: f64,
    fd_slack: f64,
    task_pct: f64,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut kv: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let k = k.strip_prefix("--").ok_or(format!("unexpected {k}"))?;
            let v = it.next().ok_or(format!("--{k} needs a value"))?;
            kv.entry(k).or_default().push(v);
        }
        let one = |k: &str| kv.get(k).and_then(|v| v.last()).map(|s| s.to_string());
        fn num<T: std::str::FromStr>(v: Option<String>, k: &str, d: T) -> Result<T, String> {
            v.map_or(Ok(d), |s| {
                s.parse().map_err(|_| format!("--{k}: not a number: {s}"))
            })
        }
        let mut sidecars = Vec::new();
        for s in kv.get("sidecar").into_iter().flatten() {
            let bad = || format!("--sidecar {s}: want NAME=PID@ADMIN-ADDR");
            let (name, rest) = s.split_once('=').ok_or_else(bad)?;
            let (pid, admin) = rest.split_once('@').ok_or_else(bad)?;
            sidecars.push(Sidecar {
                name: name.into(),
                pid: pid.parse().map_err(|_| bad())?,
                admin: admin.parse().map_err(|_| bad())?,
            });
        }
        Ok(Opts {
            target: one("target")
                .ok_or("--target is required")?
                .parse()
                .map_err(|_| "--target: not an address")?,
            host: one("host").unwrap_or_else(|| "app".into()),
            rps: num(one("rps"), "rps", 2000.0)?,
            minutes: num(one("minutes"), "minutes", 30)?,
            conns: num(one("conns"), "conns", 64)?,
            post_percent: num(one("post-percent"), "post-percent", 50)?,
            body: num(one("body"), "body", 512)?,
            timeout: Duration::from_secs_f64(num(one("timeout"), "timeout", 10.0)?),
            identity: one("identity"),
            sidecars,
            events: one("events"),
            report: one("report"),
            jsonl: one("jsonl"),
            failures: one("failures"),
            notes: kv
                .get("note")
                .into_iter()
                .flatten()
                .map(|s| s.to_string())
                .collect(),
            warmup: num(one("warmup"), "warmup", 2)?,
            rss_pct: num(one("rss-pct"), "rss-pct", 10.0)?,
            rss_mib: num(one("rss-mib"), "rss-mib", 2.0)?,
            fd_slack: num(one("fd-slack"), "fd-slack", 20.0)?,
            task_pct: num(one("task-pct"), "task-pct", 20.0)?,
        })
    }
}

/// What one minute's requests came to (by completion time).
#[derive(Default)]
struct Tally {
    sent: u64,
    get: u64,
    post: u64,
    ok: u64,
    skipped: u64,
    failed: BTreeMap<String, u64>,
    lat_us: Vec<u32>,
    by_app: BTreeMap<String, u64>,
    generation: u64,
}

struct Shared {
    tally: Mutex<Tally>,
    next: AtomicU64,
    start: Instant,
    end: Instant,
    failures_logged: AtomicU64,
    failures: Option<Mutex<std::fs::File>>,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn load(o: Arc<Opts>) -> ExitCode {
    let start = Instant::now() + Duration::from_millis(200);
    let wall0 = unix_ms() + 200;
    let s = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        next: AtomicU64::new(0),
        start,
        end: start + Duration::from_secs(60 * u64::from(o.minutes)),
        failures_logged: AtomicU64::new(0),
        failures: o
            .failures
            .as_ref()
            .map(|p| Mutex::new(std::fs::File::create(p).expect("--failures file"))),
    });
    let mut workers: Vec<_> = (0..o.conns)
        .map(|_| tokio::spawn(worker(s.clone(), o.clone())))
        .collect();
    let mut rows = Vec::new();
    let mut last = Carry::default();
    for m in 1..=o.minutes {
        let minute_end = start + Duration::from_secs(60 * u64::from(m));
        let mut samples: Vec<Vec<Sample>> = o.sidecars.iter().map(|_| Vec::new()).collect();
        loop {
            let now = Instant::now();
            if now >= minute_end {
                break;
            }
            tokio::time::sleep_until((now + SAMPLE_EVERY).min(minute_end).into()).await;
            for (i, sc) in o.sidecars.iter().enumerate() {
                samples[i].push(sample(sc).await);
            }
        }
        if m == o.minutes {
            // The last minute also takes the requests still in flight.
            for w in workers.drain(..) {
                let _ = w.await;
            }
        }
        let tally = std::mem::take(&mut *s.tally.lock().unwrap());
        let row = Row::new(m, tally, &samples, &mut last, &o, wall0);
        eprintln!("{}", row.progress(&o));
        if let Some(p) = &o.jsonl {
            append(p, &row.json(&o));
        }
        rows.push(row);
    }
    let (report, pass) = report(&o, &rows);
    println!("{report}");
    if let Some(p) = &o.report {
        if let Err(e) = std::fs::write(p, &report) {
            eprintln!("cannot write {p}: {e}");
        }
    }
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn append(path: &str, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// One connection: takes the next slot of the schedule, waits for its
/// time, sends, checks the answer, records it.
async fn worker(s: Arc<Shared>, o: Arc<Opts>) {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let body = Bytes::from(vec![b'p'; o.body]);
    loop {
        let k = s.next.fetch_add(1, Ordering::Relaxed);
        let at = s.start + Duration::from_secs_f64(k as f64 / o.rps);
        if at >= s.end {
            return;
        }
        if Instant::now() > at + MAX_LAG {
            s.tally.lock().unwrap().skipped += 1;
            continue;
        }
        tokio::time::sleep_until(at.into()).await;
        // Spread POSTs evenly: request k is one when its share rounds up.
        let post = (k + 1) * o.post_percent / 100 > k * o.post_percent / 100;
        let sent = Instant::now();
        let result = match tokio::time::timeout(o.timeout, one(&mut conn, &o, post, &body)).await {
            Ok(r) => r,
            Err(_) => {
                conn = None;
                Err("timeout (client side)".to_string())
            }
        };
        let lat = sent.elapsed();
        let result = result.and_then(|a| judge(&a, post, &o));
        if let Err(e) = &result {
            log_failure(&s, post, e, lat);
        }
        let mut t = s.tally.lock().unwrap();
        t.sent += 1;
        *if post { &mut t.post } else { &mut t.get } += 1;
        t.lat_us
            .push(lat.as_micros().min(u128::from(u32::MAX)) as u32);
        match result {
            Ok((app, generation)) => {
                t.ok += 1;
                *t.by_app.entry(app).or_default() += 1;
                t.generation = t.generation.max(generation.unwrap_or(0));
            }
            Err(e) => *t.failed.entry(e).or_default() += 1,
        }
    }
}

fn log_failure(s: &Shared, post: bool, e: &str, lat: Duration) {
    let Some(f) = &s.failures else { return };
    if s.failures_logged.fetch_add(1, Ordering::Relaxed) >= FAILURES_LOGGED {
        return;
    }
    let method = if post { "POST" } else { "GET" };
    let _ = writeln!(
        f.lock().unwrap(),
        "{} {method} {e} after {} ms",
        unix_ms(),
        lat.as_millis()
    );
}

struct Answer {
    status: u16,
    error: String,
    app: String,
    body: Bytes,
}

async fn one(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    o: &Opts,
    post: bool,
    body: &Bytes,
) -> Result<Answer, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(o.target)
            .await
            .map_err(|e| format!("transport: connect: {}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("transport: handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = c.await;
        });
        *conn = Some(tx);
    }
    let Some(tx) = conn.as_mut() else {
        return Err("transport: no connection".into());
    };
    let req = if post {
        Request::post("/upload").body(Full::new(body.clone()))
    } else {
        Request::get("/headers").body(Full::new(Bytes::new()))
    };
    let mut req = req.expect("request");
    req.headers_mut()
        .insert(http::header::HOST, o.host.parse().expect("--host"));
    let sent = async {
        tx.ready().await?;
        let resp = tx.send_request(req).await?;
        let (parts, b) = resp.into_parts();
        Ok::<_, hyper::Error>((parts, b.collect().await?.to_bytes()))
    };
    let (parts, body) = match sent.await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            let what = if e.is_incomplete_message() {
                "closed before the answer".to_string()
            } else {
                e.to_string()
            };
            return Err(format!("transport: {what}"));
        }
    };
    let h = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    Ok(Answer {
        status: parts.status.as_u16(),
        error: h("x-weft-error"),
        app: h("x-upstream"),
        body,
    })
}

/// A good answer (the app that gave it, the config generation it saw) or
/// why it is not one.
fn judge(a: &Answer, post: bool, o: &Opts) -> Result<(String, Option<u64>), String> {
    if !(200..300).contains(&a.status) {
        return Err(format!("{} {}", a.status, a.error));
    }
    if post {
        if a.body != o.body.to_string().as_bytes() {
            return Err("bad answer: POST length not echoed".into());
        }
        return Ok((a.app.clone(), None));
    }
    let Ok(seen) = serde_json::from_slice::<serde_json::Value>(&a.body) else {
        return Err("bad answer: GET body is not the headers".into());
    };
    if let Some(id) = &o.identity {
        if seen["x-weft-peer-identity"].as_str() != Some(id) {
            return Err("bad answer: app did not see the caller's identity".into());
        }
    }
    let generation = seen["x-soak-generation"]
        .as_str()
        .and_then(|g| g.parse().ok());
    Ok((a.app.clone(), generation))
}
