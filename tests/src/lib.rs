//! Test harness: starts the real `weft-proxy` binary and real upstream
//! servers on loopback ports chosen by the kernel, and offers small helpers
//! (HTTP clients, admin queries, bounded polling) for the end-to-end tests.

pub mod certificate_api;
pub mod client;
pub mod conformance;
pub mod control_plane;
pub mod dns;
pub mod faulty;
pub mod inject_cluster;
pub mod kube_cluster;
pub mod kube_fake;
pub mod kube_install;
pub mod kubelet;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod otlp;
pub mod pod_net;
pub mod proxy;
pub mod relay;
pub mod route_cluster;
pub mod route_status;
pub mod svc;
pub mod upstream;
pub mod wire;

pub use client::*;
pub use control_plane::ControlPlane;
pub use faulty::{Faulty, Mode};
pub use proxy::*;
pub use upstream::*;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "weft-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `limit`.
/// For conditions with no event to wait on (a file-watch reload, a DNS TTL).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] that gives up with `None` instead of panicking (for a
/// caller that says what it saw).
pub async fn eventually_or<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the Python test peers live (`tests/peers/`).
pub fn peers_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// True when a command-line tool is installed; when it is not, the test
/// prints why it skips — or fails under CI, where everything must run.
pub fn require_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI (install it in .ci/run)");
        }
        eprintln!("SKIP: {tool} is not installed");
    }
    found
}

/// Same as [`require_tool`] for a Python module.
pub fn require_python_module(module: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("python module {module} is required in CI (pip install it in .ci/run)");
        }
        eprintln!("SKIP: python module {module} is not installed");
    }
    found
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
