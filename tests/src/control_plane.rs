//! Runs the real `weft-control-plane` binary on loopback ports chosen by
//! the kernel, with its config and CA in a scratch directory.

use crate::proxy::spawn_until;
use crate::TempDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of the built `weft-control-plane` (next to the proxy binary).
pub fn control_plane_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_CONTROL_PLANE_BIN") {
        return PathBuf::from(p);
    }
    let bin = crate::proxy::proxy_bin().with_file_name("weft-control-plane");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it)",
        bin.display()
    );
    bin
}

pub struct ControlPlane {
    child: Option<Child>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The injection webhook's address, when started with `--webhook`.
    pub webhook: Option<SocketAddr>,
    pub dir: TempDir,
    pub config: PathBuf,
    pub ca_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
    /// Pass `--config` (false: the cluster is the only source).
    files: bool,
    /// Pass `--ca-dir` (false: the CA is the cluster's `weft-ca` Secret).
    ca_dir_flag: bool,
    env: Vec<(String, String)>,
    /// The log line that says it started (and names its ports).
    marker: &'static str,
}

impl ControlPlane {
    /// Starts a control plane serving `yaml`, with extra `args`.
    pub fn start(yaml: &str, args: &[&str]) -> ControlPlane {
        Self::start_with_ca(yaml, args, None)
    }

    /// A control plane reading a Kubernetes cluster (`--kubernetes`) with
    /// `kubeconfig`, and no files; extra `args`.
    pub fn start_kubernetes(kubeconfig: &std::path::Path, args: &[&str]) -> ControlPlane {
        let mut cp = Self::new("", args, None);
        cp.files = false;
        cp.args.insert(0, "--kubernetes".into());
        cp.env
            .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        cp.spawn();
        cp
    }

    /// A control plane reading both a Kubernetes cluster (`--kubernetes`
    /// with `kubeconfig`) and `yaml` (`--config`, e.g. routes and policies
    /// for the cluster's Services).
    pub fn start_kubernetes_and_files(kubeconfig: &std::path::Path, yaml: &str) -> ControlPlane {
        let mut cp = Self::new(yaml, &["--kubernetes"], None);
        cp.env
            .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        cp.spawn();
        cp
    }

    /// As [`ControlPlane::start_kubernetes`], returning as soon as it waits
    /// for the first list of the cluster (its admin endpoint is up; its
    /// proxy listener is not known yet).
    pub fn start_kubernetes_waiting(kubeconfig: &std::path::Path) -> ControlPlane {
        let mut cp = Self::new("", &["--kubernetes"], None);
        cp.files = false;
        cp.marker = "waiting for the first list of the cluster";
        cp.env
            .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        cp.spawn();
        cp
    }

    /// A control plane reading a Kubernetes cluster with `kubeconfig`, its
    /// CA in the cluster (Secret `weft-ca`: no `--ca-dir`); returns once it
    /// logs `marker` (its admin address is known only if that line names
    /// it, as "weft-control-plane serving" does). `ca_file()` is where a
    /// test may write the root it fetched from the cluster.
    pub fn start_kubernetes_ca_secret(
        kubeconfig: &std::path::Path,
        args: &[&str],
        marker: &'static str,
    ) -> ControlPlane {
        let mut cp = Self::new("", args, None);
        cp.files = false;
        cp.ca_dir_flag = false;
        cp.marker = marker;
        cp.args.insert(0, "--kubernetes".into());
        cp.env
            .push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
        std::fs::create_dir_all(&cp.ca_dir).expect("create the CA directory");
        cp.spawn();
        cp
    }

    /// A second instance: same CA directory as `other` (as replicas share
    /// one CA), its own copy of the files.
    pub fn replica_of(other: &ControlPlane, yaml: &str) -> ControlPlane {
        Self::start_with_ca(yaml, &[], Some(other.ca_dir.clone()))
    }

    fn start_with_ca(yaml: &str, args: &[&str], ca_dir: Option<PathBuf>) -> ControlPlane {
        let mut cp = Self::new(yaml, args, ca_dir);
        cp.spawn();
        cp
    }

    fn new(yaml: &str, args: &[&str], ca_dir: Option<PathBuf>) -> ControlPlane {
        let dir = TempDir::new("cp");
        let config = dir.path().join("mesh.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let ca_dir = ca_dir.unwrap_or_else(|| dir.path().join("ca"));
        ControlPlane {
            child: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            webhook: None,
            dir,
            config,
            ca_dir,
            log: Arc::new(Mutex::new(Vec::new())),
            args: args.iter().map(|s| s.to_string()).collect(),
            files: true,
            ca_dir_flag: true,
            env: Vec::new(),
            marker: "weft-control-plane serving",
        }
    }

    /// (Re)starts the process, on the same ports once they are known.
    fn spawn(&mut self) {
        let mut cmd = Command::new(control_plane_bin());
        cmd.arg("serve");
        if self.files {
            cmd.arg("--config").arg(&self.config);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.ca_dir_flag {
            cmd.arg("--ca-dir").arg(&self.ca_dir);
        }
        cmd.args(["--listen", &self.listen.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .args(["--log-format", "json"])
            .args(&self.args);
        let (child, log, line) = spawn_until(cmd, self.marker);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = |k: &str| -> SocketAddr {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        if self.marker == "weft-control-plane serving" {
            self.listen = addr("listen");
            self.webhook = v["webhook"].as_str().and_then(|s| s.parse().ok());
        }
        if v.get("admin").is_some() || self.marker.contains("weft-control-plane serving") {
            self.admin = addr("admin");
        }
        self.child = Some(child);
        self.log = log;
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    /// Kills the process (SIGKILL: nothing is saved on the way out).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process as an orchestrator would (SIGTERM), and waits
    /// for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports, with the same CA and files.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.ca_dir.join("ca.pem")
    }

    /// A bootstrap token for `namespace`/`sa`, from the `token` subcommand.
    pub fn token(&self, namespace: &str, sa: &str) -> String {
        let out = Command::new(control_plane_bin())
            .arg("token")
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .args(["--namespace", namespace, "--service-account", sa])
            .output()
            .expect("run token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A sidecar of `namespace`/`sa` in mesh mode: no config files, this
    /// control plane's flags and a fresh bootstrap token for it.
    pub fn sidecar(&self, namespace: &str, sa: &str) -> crate::proxy::ProxyBuilder {
        let token = self.token(namespace, sa);
        let mut b = crate::proxy::Proxy::builder("").no_config();
        for a in self.proxy_args(namespace, sa, &token) {
            b = b.arg(a);
        }
        b
    }

    /// Mesh-mode flags for a proxy of `namespace`/`sa` holding `token`.
    pub fn proxy_args(&self, namespace: &str, sa: &str, token: &str) -> Vec<String> {
        vec![
            "--control-plane".into(),
            self.url(),
            "--control-plane-ca".into(),
            self.ca_file().display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--service-account".into(),
            sa.into(),
            "--bootstrap-token".into(),
            token.into(),
        ]
    }

    /// Replaces the config file atomically.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".mesh.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = crate::client::get(&format!("http://{}{}", self.admin, path), &[])
            .await
            .expect("admin request");
        serde_json::from_slice(&r.body).expect("json")
    }

    /// The value of metric `name` on the admin endpoint, summed over its
    /// label sets; panics when it is not exported.
    pub async fn metric(&self, name: &str) -> f64 {
        let r = crate::client::get(&format!("http://{}/metrics", self.admin), &[])
            .await
            .expect("metrics");
        let samples: Vec<f64> = r
            .text()
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        assert!(!samples.is_empty(), "no metric {name}");
        samples.iter().sum()
    }

    /// The version of the resources in force.
    pub async fn version(&self) -> String {
        let config = self.admin_json("/config").await;
        config["version"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until the resources' version is not `old` (an edit was taken)
    /// and `n` connected proxies all acknowledged it; returns it.
    pub async fn wait_all_acked(&self, n: usize, old: Option<&str>, limit: Duration) -> String {
        crate::eventually(
            "proxies acknowledged the current version",
            limit,
            || async {
                let config = self.admin_json("/config").await;
                let version = config["version"].as_str()?.to_string();
                if old == Some(version.as_str()) {
                    return None;
                }
                let proxies = self.admin_json("/proxies").await;
                let list = proxies.as_array()?;
                // Each proxy's scoped snapshot was cut from this version
                // and acknowledged.
                let done = |p: &serde_json::Value| {
                    p["resources"].as_str() == Some(&version)
                        && p["current"].is_string()
                        && p["acked"] == p["current"]
                };
                (list.len() == n && list.iter().all(done)).then_some(version)
            },
        )
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}
