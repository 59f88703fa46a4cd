//! End-to-end transparent interception: an unmodified client in an "app" network namespace
//! reaches an upstream in a "server" namespace through the sidecar, because
//! `weft-proxy iptables` redirected its traffic.
//!
//! Needs root, `ip`, `iptables`, `curl`, `python3` and `setpriv`; without them the test is
//! skipped, except under CI (env `CI` set), where it fails. The proxy binary is not built by
//! `cargo test -p weft-tests`: run `cargo build -p weft-proxy` first. Everything happens in
//! two namespaces this test creates and always deletes; no traffic leaves them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The uid/gid the sidecar runs as (nobody): iptables exempts its own traffic by uid.
const PROXY_UID: u32 = 65534;
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream: answers every GET with what it saw, so the test can tell it was reached.
const UPSTREAM_PY: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("upstream saw host=%s path=%s" % (self.headers.get("Host"), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
"#;

struct Tools {
    ip: PathBuf,
    iptables: PathBuf,
    curl: PathBuf,
    python3: PathBuf,
    setpriv: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // Effective uid: second field of the Uid line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}

fn prerequisites() -> Result<Tools, String> {
    if !is_root() {
        return Err("not running as root (network namespaces and iptables need it)".into());
    }
    let tool = |name: &str| find_tool(name).ok_or(format!("`{name}` not found"));
    let iptables = match std::env::var_os("WEFT_IPTABLES_BIN") {
        Some(bin) => find_tool(&bin.to_string_lossy()).unwrap_or_else(|| PathBuf::from(bin)),
        None => tool("iptables")?,
    };
    let tools = Tools {
        ip: tool("ip")?,
        iptables,
        curl: tool("curl")?,
        python3: tool("python3")?,
        setpriv: tool("setpriv")?,
    };
    let probe = run(Command::new(&tools.ip).args(["netns", "list"]))?;
    if !probe.status.success() {
        return Err(format!("`ip netns` unusable: {}", text(&probe.stderr)));
    }
    Ok(tools)
}

/// `target/debug/weft-proxy`: tests run from `target/debug/deps/`, two levels below.
fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("weft-proxy"))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "proxy binary {} is missing: run `cargo build -p weft-proxy` first",
        bin.display()
    );
    bin
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Runs a command to completion, killing it after `STEP_TIMEOUT`.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {STEP_TIMEOUT:?}"));
            }
        }
    }
    child.wait_with_output().map_err(|e| format!("{what}: {e}"))
}

/// Two namespaces, the processes in them and a scratch dir; all removed on drop, even when
/// the test panics (then the process logs are printed).
struct Sandbox {
    tools: Tools,
    app: String,
    srv: String,
    dir: PathBuf,
    children: Vec<(&'static str, Child)>,
}

impl Sandbox {
    /// Runs `args` inside namespace `ns`, panicking with its output unless it succeeds.
    fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.tools.ip);
        cmd.args(["netns", "exec", ns]).args(args);
        cmd.env("WEFT_IPTABLES_BIN", &self.tools.iptables);
        let out = run(&mut cmd).unwrap_or_else(|e| panic!("{e}"));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{args:?} in {ns} failed: {stdout}\n{stderr}"
        );
        stdout
    }

    /// Starts a long-running process inside `ns`, logging to `<dir>/<name>.log`.
    fn spawn(&mut self, name: &'static str, ns: &str, args: &[&str]) {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.tools.ip)
            .args(["netns", "exec", ns])
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name, child));
    }

    /// `curl` inside `ns`: (status code, body). Plain curl: no proxy settings at all.
    fn curl(&self, ns: &str, extra: &[&str], url: &str) -> (u16, String) {
        let curl = self.tools.curl.to_string_lossy().into_owned();
        let mut args = vec![curl.as_str(), "-s", "--noproxy", "*", "--max-time", "5"];
        args.extend(extra);
        args.extend(["-w", "\n%{http_code}", url]);
        let out = run(Command::new(&self.tools.ip)
            .args(["netns", "exec", ns])
            .args(&args))
        .unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Polls `url` inside `ns` until it answers 200, failing fast if a child died.
    fn wait_ready(&mut self, ns: &str, url: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while Instant::now() < deadline {
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited early ({status})");
                }
            }
            if self.curl(ns, &[], url).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} in {ns} not ready within {STEP_TIMEOUT:?}");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let log = fs::read_to_string(self.dir.join(format!("{name}.log")));
                eprintln!("----- {name} log -----\n{}", log.unwrap_or_default());
            }
        }
        for ns in [&self.app, &self.srv] {
            let _ = run(Command::new(&self.tools.ip).args(["netns", "del", ns]));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sum of `weft_requests_total` samples labelled `direction="outbound"`.
fn outbound_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("weft_requests_total") && l.contains("direction=\"outbound\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn transparent_interception_in_netns() {
    let tools = match prerequisites() {
        Ok(tools) => tools,
        Err(why) if std::env::var_os("CI").is_some() => panic!("netns test cannot run: {why}"),
        Err(why) => {
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let bin = proxy_binary();
    let pid = std::process::id();
    let x = pid % 250 + 1;
    let (app_ip, srv_ip) = (format!("10.213.{x}.1"), format!("10.213.{x}.2"));
    let mut sb = Sandbox {
        tools,
        app: format!("weft-app-{pid}"),
        srv: format!("weft-srv-{pid}"),
        dir: std::env::temp_dir().join(format!("weft-netns-{pid}")),
        children: Vec::new(),
    };
    let (app, srv) = (sb.app.clone(), sb.srv.clone());

    // Scratch dir readable by the unprivileged proxy, with its own copy of the binary (the
    // workspace may sit under a directory nobody cannot enter).
    let _ = fs::remove_dir_all(&sb.dir);
    fs::create_dir_all(&sb.dir).expect("scratch dir");
    fs::set_permissions(&sb.dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let proxy = sb.dir.join("weft-proxy");
    if fs::hard_link(&bin, &proxy).is_err() {
        fs::copy(&bin, &proxy).expect("copy weft-proxy");
    }
    fs::set_permissions(&proxy, fs::Permissions::from_mode(0o755)).expect("chmod proxy");
    let config = sb.dir.join("weft.yaml");
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: upstream, namespace: default}}\n\
         spec:\n  protocol: http\n  port: 8000\n  endpoints:\n    - address: {srv_ip}:8000\n"
    );
    fs::write(&config, yaml).expect("write config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).expect("chmod config");

    // Namespaces joined by a veth pair created directly inside them.
    let ip = sb.tools.ip.clone();
    for ns in [&app, &srv] {
        let _ = run(Command::new(&ip).args(["netns", "del", ns]));
        let out = run(Command::new(&ip).args(["netns", "add", ns])).expect("ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {ns}: {}",
            text(&out.stderr)
        );
    }
    let ipn = |ns: &str, args: &str| {
        let out = run(Command::new(&ip)
            .args(["-n", ns])
            .args(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "ip -n {ns} {args}: {}",
            text(&out.stderr)
        );
    };
    ipn(
        &app,
        &format!("link add veth0 type veth peer name veth1 netns {srv}"),
    );
    ipn(&app, &format!("addr add {app_ip}/24 dev veth0"));
    ipn(&srv, &format!("addr add {srv_ip}/24 dev veth1"));
    for (ns, dev) in [(&app, "veth0"), (&srv, "veth1")] {
        ipn(ns, "link set lo up");
        ipn(ns, &format!("link set {dev} up"));
    }

    // Upstream in the server namespace.
    let python = sb.tools.python3.to_string_lossy().into_owned();
    sb.spawn("upstream", &srv, &[&python, "-c", UPSTREAM_PY]);
    sb.wait_ready(&srv, "http://127.0.0.1:8000/ping");

    // The sidecar, unprivileged, in the app namespace.
    let (setpriv, proxy_s) = (
        sb.tools.setpriv.clone(),
        proxy.to_string_lossy().into_owned(),
    );
    let (uid_arg, gid_arg) = (
        format!("--reuid={PROXY_UID}"),
        format!("--regid={PROXY_UID}"),
    );
    let config_s = config.to_string_lossy().into_owned();
    let setpriv_s = setpriv.to_string_lossy().into_owned();
    #[rustfmt::skip]
    let run_args = [
        setpriv_s.as_str(), &uid_arg, &gid_arg, "--clear-groups", &proxy_s, "run",
        "--config", &config_s, "--outbound", "0.0.0.0:15001", "--inbound", "127.0.0.1:15006",
        "--admin", "127.0.0.1:15000",
    ];
    sb.spawn("weft-proxy", &app, &run_args);
    sb.wait_ready(&app, "http://127.0.0.1:15000/ready");

    // Intercept the app namespace's traffic.
    let uid = PROXY_UID.to_string();
    #[rustfmt::skip]
    let install = [
        proxy_s.as_str(), "iptables", "--outbound-port", "15001", "--inbound-port", "15006",
        "--proxy-uid", &uid, "--exclude-inbound-ports", "15000",
    ];
    sb.exec(&app, &install);
    let iptables = sb.tools.iptables.to_string_lossy().into_owned();
    let nat = sb.exec(&app, &[&iptables, "-t", "nat", "-S"]);
    assert!(
        nat.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"),
        "rules not installed:\n{nat}"
    );

    // An unmodified client: no proxy settings, it just dials the upstream's address.
    let (code, body) = sb.curl(&app, &[], &format!("http://{srv_ip}:8000/hello"));
    assert_eq!(code, 200, "passthrough request failed: {body}");
    assert!(
        body.starts_with("upstream saw host=") && body.ends_with("path=/hello"),
        "unexpected body: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut metrics = String::new();
    while Instant::now() < deadline {
        metrics = sb.curl(&app, &[], "http://127.0.0.1:15000/metrics").1;
        if outbound_requests(&metrics) >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        outbound_requests(&metrics) >= 1.0,
        "request did not go through the proxy (no outbound weft_requests_total):\n{metrics}"
    );

    // Same address, but a Host naming the Backend: routed by name.
    let (code, body) = sb.curl(
        &app,
        &["-H", "Host: upstream"],
        &format!("http://{srv_ip}:8000/routed"),
    );
    assert_eq!(code, 200, "routed request failed: {body}");
    assert!(
        body.starts_with("upstream saw") && body.ends_with("path=/routed"),
        "unexpected body: {body}"
    );

    // Uninstall leaves no trace.
    sb.exec(&app, &[&proxy_s, "iptables", "--uninstall"]);
    let nat = sb.exec(&app, &[&iptables, "-t", "nat", "-S"]);
    assert!(!nat.contains("WEFT"), "rules left after uninstall:\n{nat}");
}
