//! A test stand-in for the kubelet, so a test can run an injected Pod from
//! the spec the API server stored, not from arguments written by hand: in
//! a network namespace (a [`crate::pod_net::PodNet`]), it runs the Pod's
//! init containers in order as the kubelet does — a plain one to
//! completion (non-zero exit is an error), a native sidecar
//! (`restartPolicy: Always`) left running once its `startupProbe` passes,
//! probed exactly as declared (httpGet path and port on the Pod IP,
//! `initialDelaySeconds`, `periodSeconds`, `failureThreshold`,
//! `timeoutSeconds`; at most a minute here) — and calls any container's
//! httpGet probes as declared.
//!
//! Each container runs with only its own `command`+`args` (the command
//! found in the image, which maps to a local binary), only its declared
//! `env` (plus `PATH`, and `WEFT_IPTABLES_BIN`/`WEFT_IP6TABLES_BIN` when the
//! host sets them: which iptables the image would hold), values resolved
//! from the Pod (`fieldRef` metadata.name, metadata.namespace,
//! spec.serviceAccountName, status.podIP), its `volumeMounts` bind-mounted
//! in a mount namespace of its own (a projected `serviceAccountToken`
//! volume holds a token the test issues for the source's own audience and
//! expiry; an `emptyDir` is a fresh directory; `readOnly` mounts are
//! remounted read-only), and its
//! `securityContext` applied with `setpriv` (runAsUser/runAsGroup, no
//! supplementary groups, `allowPrivilegeEscalation: false` as no_new_privs,
//! capabilities as the bounding set, `runAsNonRoot` checked). The Pod's
//! `/etc/hosts` is written as the kubelet writes it, plus names the test
//! adds with [`Kubelet::host`], standing in for cluster DNS (through
//! `ip netns exec`'s `/etc/netns/<ns>/hosts`, so programs resolve them by
//! their ordinary resolver).
//!
//! What it does not do: pull images or run the app containers (the test
//! starts its stand-in app under its own uid with [`Kubelet::start`]),
//! enforce `readOnlyRootFilesystem` or resources, restart containers,
//! refresh the token, expand `$(VAR)`, resolve env from ConfigMaps,
//! Secrets or resourceFieldRef, mount other volume kinds, or run tcpSocket,
//! grpc or exec probes. A mount path (or `/etc/netns/<ns>`) missing on this
//! host is created and removed on drop, as the runtime creates a mount
//! point in the image.

use crate::netns::{text, Tools};
use crate::{get, Resp};
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The most a startup probe is waited for here, whatever it declares
/// (`failureThreshold` × `periodSeconds` may be ten minutes).
const STARTUP_CAP: Duration = Duration::from_secs(60);

/// One Pod's kubelet.
pub struct Kubelet {
    pod: Value,
    netns: String,
    pod_ip: Ipv4Addr,
    images: HashMap<String, PathBuf>,
    ip: PathBuf,
    setpriv: PathBuf,
    dir: PathBuf,
    hosts: Vec<(String, String)>,
    created: Vec<PathBuf>,
    children: Vec<(String, Child)>,
}

impl Kubelet {
    /// A kubelet for `pod` (as the API server stored it) in network
    /// namespace `netns` at `pod_ip`; `images` maps an image to the local
    /// binary standing in for it. Each projected serviceAccountToken
    /// volume is filled at once with what `issue(audience, expiration)`
    /// returns for the source's own `audience` (`""` when it names none:
    /// the API server's) and `expirationSeconds` (default an hour), as the
    /// kubelet asks TokenRequest.
    pub fn new(
        pod: Value,
        tools: &Tools,
        netns: &str,
        pod_ip: Ipv4Addr,
        issue: &dyn Fn(&str, Duration) -> Result<String, String>,
        images: &[(&str, &Path)],
    ) -> Result<Kubelet, String> {
        let dir = std::env::temp_dir().join(format!("weft-kubelet-{}-{netns}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        mkdir(&dir, 0o755);
        let kubelet = Kubelet {
            pod,
            netns: netns.to_string(),
            pod_ip,
            images: images
                .iter()
                .map(|(i, p)| (i.to_string(), p.to_path_buf()))
                .collect(),
            ip: tools.ip.clone(),
            setpriv: tools.setpriv.clone(),
            dir,
            hosts: Vec::new(),
            created: Vec::new(),
            children: Vec::new(),
        };
        kubelet.project_tokens(issue)?;
        Ok(kubelet)
    }

    /// Writes each projected volume's tokens (mode 0644, as `defaultMode`).
    fn project_tokens(
        &self,
        issue: &dyn Fn(&str, Duration) -> Result<String, String>,
    ) -> Result<(), String> {
        for v in self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let Some(sources) = v["projected"]["sources"].as_array() else {
                continue;
            };
            let name = v["name"].as_str().ok_or("a volume without a name")?;
            let dir = self.dir.join(format!("volume-{name}"));
            mkdir(&dir, 0o755);
            for s in sources {
                let t = &s["serviceAccountToken"];
                let path = t["path"].as_str().ok_or(format!(
                    "{name}: only serviceAccountToken sources are projected here"
                ))?;
                let audience = t["audience"].as_str().unwrap_or("");
                let ttl = Duration::from_secs(t["expirationSeconds"].as_u64().unwrap_or(3600));
                let token = issue(audience, ttl).map_err(|e| format!("{name}: {e}"))?;
                let file = dir.join(path);
                fs::write(&file, token).map_err(|e| e.to_string())?;
                fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The Pod this kubelet runs.
    pub fn pod(&self) -> &Value {
        &self.pod
    }

    /// Resolves `name` to `ip` in the Pod (cluster DNS's stand-in).
    pub fn host(&mut self, name: &str, ip: &str) {
        self.hosts.push((ip.to_string(), name.to_string()));
    }

    /// Runs `spec.initContainers` in order: each plain one to completion,
    /// each native sidecar until its startup probe passes. Errors name the
    /// container and carry its output.
    pub async fn run_init_containers(&mut self) -> Result<(), String> {
        self.write_hosts()?;
        let init = self.pod["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in &init {
            let name = c["name"]
                .as_str()
                .ok_or("an init container without a name")?;
            let argv = self.command(c)?;
            if c["restartPolicy"] == "Always" {
                self.spawn(name, c, &argv)?;
                self.startup(name, c).await?;
            } else {
                let mut cmd = self.container(c, &argv)?;
                let out = cmd
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("{name}: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "init container {name} exited with {}: {}\n{}",
                        out.status,
                        text(&out.stdout),
                        text(&out.stderr)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts `argv` as the app container `name` would run: its env,
    /// mounts and securityContext from the spec, as user and group `uid`
    /// (the test's stand-in for the image's user).
    pub fn start(&mut self, name: &str, uid: u32, argv: &[&str]) -> Result<(), String> {
        let mut c = self
            .containers()
            .into_iter()
            .find(|c| c["name"] == name)
            .ok_or(format!("no container {name}"))?;
        let sc = &mut c["securityContext"];
        if !sc.is_object() {
            *sc = serde_json::json!({});
        }
        sc["runAsUser"] = uid.into();
        sc["runAsGroup"] = uid.into();
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        self.spawn(name, &c, &argv)
    }

    /// Calls container `container`'s `kind` probe (`livenessProbe`, ...)
    /// as declared: its httpGet on the Pod IP within `timeoutSeconds`.
    pub async fn probe(&self, container: &str, kind: &str) -> Result<Resp, String> {
        let all = self.containers().into_iter();
        let c = all
            .chain(
                self.pod["spec"]["initContainers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            )
            .find(|c| c["name"] == container)
            .ok_or(format!("no container {container}"))?;
        call(&self.pod_ip, &c, &c[kind]).await
    }

    /// Fails if a container started here has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(self.dir.join(format!("{name}.log")));
                return Err(format!(
                    "container {name} exited ({status}):\n{}",
                    log.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// A started container's output so far.
    pub fn logs(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn containers(&self) -> Vec<Value> {
        self.pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls a sidecar's startupProbe as declared until it passes.
    async fn startup(&mut self, name: &str, c: &Value) -> Result<(), String> {
        let probe = &c["startupProbe"];
        if probe.is_null() {
            return Ok(());
        }
        let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
        let threshold = probe["failureThreshold"].as_u64().unwrap_or(3);
        let deadline = tokio::time::Instant::now() + STARTUP_CAP;
        let mut last = String::new();
        let delay = probe["initialDelaySeconds"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(delay)).await;
        for _ in 0..threshold {
            self.check_running()?;
            match call(&self.pod_ip, c, probe).await {
                Ok(r) if (200..400).contains(&r.status) => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status, r.text()),
                Err(e) => last = e,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // The probe's own period: how the kubelet paces it.
            tokio::time::sleep(period).await;
        }
        Err(format!(
            "{name}'s startup probe did not pass (last: {last}):\n{}",
            self.logs(name)
        ))
    }

    /// The container's argv: `command` (found in its image) then `args`.
    fn command(&self, c: &Value) -> Result<Vec<String>, String> {
        let name = c["name"].as_str().unwrap_or("?");
        let image = c["image"].as_str().ok_or(format!("{name}: no image"))?;
        let bin = self
            .images
            .get(image)
            .ok_or(format!("{name}: no local binary for image {image}"))?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut argv = strings(&c["command"]);
        argv.extend(strings(&c["args"]));
        let first = argv.first().ok_or(format!("{name}: no command"))?;
        let file = bin.file_name().map(|f| f.to_string_lossy().into_owned());
        if Path::new(first)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            != file
        {
            return Err(format!("{name}: command {first} is not in image {image}"));
        }
        argv[0] = bin.to_string_lossy().into_owned();
        Ok(argv)
    }

    /// Starts a long-running container, logging to `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, c: &Value, argv: &[String]) -> Result<(), String> {
        let log =
            fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = self
            .container(c, argv)?
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The command that runs `argv` as container `c`: in the Pod's network
    /// namespace, a shell (as root) mounts the volumes, then `setpriv`
    /// takes the securityContext and execs.
    fn container(&mut self, c: &Value, argv: &[String]) -> Result<Command, String> {
        let name = c["name"].as_str().unwrap_or("?").to_string();
        let mut script = String::from("set -e\n");
        for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
            let volume = m["name"]
                .as_str()
                .ok_or(format!("{name}: a mount without a volume"))?;
            let at = m["mountPath"]
                .as_str()
                .ok_or(format!("{name}: {volume} has no mountPath"))?;
            let source = self.volume(volume)?;
            self.ensure_dir(Path::new(at))?;
            script += &format!(
                "mount --bind {} {}\n",
                quote(&source.to_string_lossy()),
                quote(at)
            );
            if m["readOnly"] == true {
                script += &format!("mount -o remount,bind,ro {}\n", quote(at));
            }
        }
        let mut privs = vec![self.setpriv.to_string_lossy().into_owned()];
        privs.extend(security(&name, &c["securityContext"])?);
        script += "exec";
        for a in privs.iter().chain(argv) {
            script += " ";
            script += &quote(a);
        }
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.netns, "sh", "-c", &script]);
        cmd.env_clear().current_dir(&self.dir);
        for var in ["PATH", "WEFT_IPTABLES_BIN", "WEFT_IP6TABLES_BIN"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        for (k, v) in self.env(c)? {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// The container's `env`, resolved.
    fn env(&self, c: &Value) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for e in c["env"].as_array().cloned().unwrap_or_default() {
            let key = e["name"].as_str().ok_or("an env entry without a name")?;
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                let meta = &self.pod["metadata"];
                let field = match path {
                    "metadata.name" => meta["name"].as_str().map(String::from),
                    "metadata.namespace" => meta["namespace"].as_str().map(String::from),
                    "spec.serviceAccountName" => self.pod["spec"]["serviceAccountName"]
                        .as_str()
                        .map(String::from),
                    "status.podIP" => Some(self.pod_ip.to_string()),
                    other => return Err(format!("{key}: fieldRef {other} is not resolved here")),
                };
                field.ok_or(format!("{key}: {path} is not set on the Pod"))?
            } else if e["valueFrom"].is_null() {
                String::new()
            } else {
                return Err(format!("{key}: {} is not resolved here", e["valueFrom"]));
            };
            out.push((key.to_string(), value));
        }
        Ok(out)
    }

    /// The directory holding volume `name`'s contents.
    fn volume(&self, name: &str) -> Result<PathBuf, String> {
        let spec = self.pod["spec"]["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .ok_or(format!("no volume {name} in the Pod"))?;
        let dir = self.dir.join(format!("volume-{name}"));
        if dir.exists() {
            return Ok(dir);
        }
        if spec["emptyDir"].is_object() {
            mkdir(&dir, 0o777);
        } else {
            return Err(format!(
                "volume {name}: only projected and emptyDir are mounted here"
            ));
        }
        Ok(dir)
    }

    /// Creates a missing mount point (and its missing parents), to remove on drop.
    fn ensure_dir(&mut self, at: &Path) -> Result<(), String> {
        let mut missing = Vec::new();
        let mut p = Some(at);
        while let Some(d) = p.filter(|d| !d.exists()) {
            missing.push(d.to_path_buf());
            p = d.parent();
        }
        for d in missing.into_iter().rev() {
            fs::create_dir(&d).map_err(|e| format!("mount point {}: {e}", d.display()))?;
            self.created.push(d);
        }
        Ok(())
    }

    /// The Pod's `/etc/hosts`: localhost, the Pod's own name, then the
    /// test's names.
    fn write_hosts(&mut self) -> Result<(), String> {
        let dir = Path::new("/etc/netns").join(&self.netns);
        self.ensure_dir(&dir)?;
        let name = self.pod["metadata"]["name"].as_str().unwrap_or("pod");
        let mut hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n{}\t{name}\n",
            self.pod_ip
        );
        for (ip, host) in &self.hosts {
            hosts += &format!("{ip}\t{host}\n");
        }
        let file = dir.join("hosts");
        fs::write(&file, hosts).map_err(|e| e.to_string())?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("----- container {name} -----\n{}", self.logs(name));
            }
        }
        let _ = fs::remove_file(Path::new("/etc/netns").join(&self.netns).join("hosts"));
        for d in self.created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Calls an httpGet `probe` of container `c` on `pod_ip`, as the kubelet does.
async fn call(pod_ip: &Ipv4Addr, c: &Value, probe: &Value) -> Result<Resp, String> {
    let http = &probe["httpGet"];
    if !http.is_object() {
        return Err(format!("not an httpGet probe: {probe}"));
    }
    if http["scheme"].as_str().unwrap_or("HTTP") != "HTTP" {
        return Err(format!("only HTTP probes are called here: {probe}"));
    }
    let port = match &http["port"] {
        Value::Number(n) => n.as_u64().ok_or(format!("bad port in {probe}"))?,
        Value::String(named) => c["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == named.as_str()))
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or(format!("no port named {named}"))?,
        _ => return Err(format!("no port in {probe}")),
    };
    let host = http["host"]
        .as_str()
        .map(String::from)
        .unwrap_or(pod_ip.to_string());
    let url = format!(
        "http://{host}:{port}{}",
        http["path"].as_str().unwrap_or("/")
    );
    let mut headers = vec![
        ("user-agent".to_string(), "kube-probe/1.36".to_string()),
        ("accept".to_string(), "*/*".to_string()),
    ];
    for h in http["httpHeaders"].as_array().cloned().unwrap_or_default() {
        let (Some(k), Some(v)) = (h["name"].as_str(), h["value"].as_str()) else {
            return Err(format!("bad header in {probe}"));
        };
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v.to_string()));
    }
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1));
    match tokio::time::timeout(timeout, get(&url, &headers)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
    }
}

/// `setpriv` flags for a securityContext.
fn security(name: &str, sc: &Value) -> Result<Vec<String>, String> {
    let user = sc["runAsUser"].as_u64();
    if sc["runAsNonRoot"] == true && user.unwrap_or(0) == 0 {
        return Err(format!("{name}: runAsNonRoot with a root user"));
    }
    let mut flags = vec![
        format!("--reuid={}", user.unwrap_or(0)),
        format!("--regid={}", sc["runAsGroup"].as_u64().unwrap_or(0)),
        "--clear-groups".to_string(),
    ];
    if sc["allowPrivilegeEscalation"] == false {
        flags.push("--no-new-privs".into());
    }
    let caps = |k: &str| -> Vec<String> {
        sc["capabilities"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str())
                    .map(str::to_lowercase)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (drop, add) = (caps("drop"), caps("add"));
    if !drop.is_empty() || !add.is_empty() {
        let mut set: Vec<String> = drop
            .iter()
            .map(|c| {
                if c == "all" {
                    "-all".into()
                } else {
                    format!("-{c}")
                }
            })
            .collect();
        set.extend(add.iter().map(|c| format!("+{c}")));
        flags.push(format!("--bounding-set={}", set.join(",")));
        flags.push(format!("--inh-caps={}", set.join(",")));
    }
    Ok(flags)
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn mkdir(dir: &Path, mode: u32) {
    fs::create_dir_all(dir).expect("kubelet dir");
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).expect("chmod kubelet dir");
}
