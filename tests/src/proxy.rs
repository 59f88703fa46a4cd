//! The real `weft-proxy` binary under test.

use crate::TempDir;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of the built `weft-proxy` (`$WEFT_PROXY_BIN`, or next to the test binary).
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_PROXY_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps; the proxy in target/<profile>.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("weft-proxy");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or `cargo build -p weft-proxy` first",
        bin.display()
    );
    bin
}

/// A running proxy with its config in a scratch directory.
pub struct Proxy {
    child: Option<Child>,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    /// The probe listener, when started with `--probes`.
    pub probes: Option<SocketAddr>,
    pub dir: TempDir,
    pub config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

pub struct ProxyBuilder {
    yaml: String,
    args: Vec<String>,
    app: Option<SocketAddr>,
    no_config: bool,
    env: Vec<(String, String)>,
}

/// Spawns `cmd` with stderr captured, and waits (up to 20 s) for a log line
/// containing `marker`; returns the child, its log so far (kept growing)
/// and that line. Panics with the log if the line never comes.
pub fn spawn_until(mut cmd: Command, marker: &str) -> (Child, Arc<Mutex<Vec<String>>>, String) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&marker) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Some(line.clone()));
                    }
                }
                log.lock().unwrap().push(line);
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        });
    }
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(l)) => (child, log, l),
        _ => {
            let _ = child.kill();
            panic!(
                "{marker:?} never logged; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

impl ProxyBuilder {
    /// Mesh mode: no `--config` (pass `--control-plane` and friends as args).
    pub fn no_config(mut self) -> Self {
        self.no_config = true;
        self
    }
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    /// Sets an environment variable for the proxy process.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn app(mut self, app: SocketAddr) -> Self {
        self.app = Some(app);
        self
    }
    /// Starts the proxy and waits for its "serving" log line.
    pub fn start(self) -> Proxy {
        let dir = TempDir::new("proxy");
        let config = dir.path().join("mesh.yaml");
        std::fs::write(&config, &self.yaml).expect("write config");
        let mut cmd = Command::new(proxy_bin());
        cmd.arg("run");
        if !self.no_config {
            cmd.arg("--config").arg(&config);
        }
        cmd.args([
            "--outbound",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .args(&self.args)
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(app) = self.app {
            cmd.arg("--app").arg(app.to_string());
        }
        let (child, log, line) = spawn_until(cmd, "weft-proxy serving");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = |k: &str| {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        Proxy {
            outbound: addr("outbound"),
            inbound: addr("inbound"),
            admin: addr("admin"),
            probes: v["probes"].as_str().and_then(|s| s.parse().ok()),
            child: Some(child),
            dir,
            config,
            log,
        }
    }
}

impl Proxy {
    pub fn builder(yaml: impl Into<String>) -> ProxyBuilder {
        ProxyBuilder {
            yaml: yaml.into(),
            args: Vec::new(),
            app: None,
            no_config: false,
            env: Vec::new(),
        }
    }

    pub fn start(yaml: impl Into<String>) -> Proxy {
        Self::builder(yaml).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Replaces the config file (atomically, as editors and ConfigMaps do).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".mesh.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.outbound, path)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = crate::client::get(&format!("http://{}{}", self.admin, path), &[])
            .await
            .expect("admin request");
        (r.status, r.text())
    }

    /// The value of one Prometheus sample whose line contains all of `parts`.
    pub async fn metric(&self, name: &str, parts: &[&str]) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The config version now in force.
    pub async fn version(&self) -> u64 {
        let (_, body) = self.admin_get("/endpoints").await;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["version"].as_u64())
            .unwrap_or(0)
    }

    /// Replaces the config and waits for the proxy to put it in force.
    pub async fn reload(&self, yaml: &str) {
        let before = self.version().await;
        self.write_config(yaml);
        crate::eventually(
            "the new config to be in force",
            Duration::from_secs(5),
            || async { (self.version().await > before).then_some(()) },
        )
        .await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
