//! What the soak reads from a sidecar every few seconds: its process in
//! /proc (RSS, threads, open fds) and a few series from its admin /metrics
//! (live tasks, CPU time, config version, certificate expiry, retries...).

use crate::Sidecar;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One look at a sidecar.
#[derive(Clone)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) alive: bool,
    pub(crate) rss_kib: f64,
    pub(crate) threads: f64,
    pub(crate) fds: f64,
    pub(crate) metrics: BTreeMap<&'static str, f64>,
}

/// The admin /metrics series read, each summed over the lines it matches.
const SERIES: [(&str, &str, &[&str]); 10] = [
    ("tasks", "weft_runtime_alive_tasks", &[]),
    ("cpu", "weft_process_cpu_seconds", &[]),
    (
        "cert_expiry",
        "weft_certificate_expiry_timestamp_seconds",
        &[],
    ),
    ("config_version", "weft_config_version", &[]),
    (
        "rejected",
        "weft_config_reloads_total",
        &["result=\"rejected\""],
    ),
    ("retries", "weft_retries_total", &["result=\"sent\""]),
    ("ejections", "weft_ejections_total", &[]),
    (
        "handshakes_ok",
        "weft_tls_handshakes_total",
        &["result=\"ok\""],
    ),
    ("handshakes", "weft_tls_handshakes_total", &[]),
    (
        "inbound_5xx",
        "weft_requests_total",
        &["direction=\"inbound\"", "code_class=\"5xx\""],
    ),
];

pub(crate) async fn sample(sc: &Sidecar) -> Sample {
    let mut s = Sample {
        at: Instant::now(),
        alive: false,
        rss_kib: 0.0,
        threads: 0.0,
        fds: 0.0,
        metrics: BTreeMap::new(),
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", sc.pid)) else {
        return s;
    };
    s.alive = !status.contains("State:\tZ");
    for line in status.lines() {
        let num = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("VmRSS:") {
            s.rss_kib = num(line);
        } else if line.starts_with("Threads:") {
            s.threads = num(line);
        }
    }
    s.fds = std::fs::read_dir(format!("/proc/{}/fd", sc.pid)).map_or(0, |d| d.count()) as f64;
    if let Some(text) = scrape(sc.admin).await {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let family = name.split('{').next().unwrap_or(name);
            for (key, fam, labels) in SERIES {
                if family == fam && labels.iter().all(|l| name.contains(l)) {
                    *s.metrics.entry(key).or_default() += v;
                }
            }
        }
    }
    s
}

async fn scrape(admin: SocketAddr) -> Option<String> {
    let io = async {
        let mut c = tokio::net::TcpStream::connect(admin).await?;
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}
