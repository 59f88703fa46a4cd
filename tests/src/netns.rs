//! Network namespaces as stand-in pods, for the transparent-interception
//! tests: finding the tools (or saying why the test skips: under CI it
//! fails instead), namespaces joined by a veth pair, processes started in
//! them (as the proxy's unprivileged uid where needed), `curl` inside them,
//! and listening sockets the test process itself opens inside one (to
//! relay a pod to a service on the host's loopback). Everything is removed
//! on drop, even when the test panics (then the process logs are printed).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The uid/gid the sidecar runs as (nobody): iptables exempts its own traffic by uid.
pub const PROXY_UID: u32 = 65534;
/// How long one step (a command, a readiness wait) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Tools {
    pub ip: PathBuf,
    pub iptables: PathBuf,
    pub ip6tables: PathBuf,
    pub curl: PathBuf,
    pub python3: PathBuf,
    pub setpriv: PathBuf,
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
    let program = |env: &str, name: &str| match std::env::var_os(env) {
        Some(bin) => Ok(find_tool(&bin.to_string_lossy()).unwrap_or_else(|| PathBuf::from(bin))),
        None => tool(name),
    };
    let tools = Tools {
        ip: tool("ip")?,
        iptables: program("WEFT_IPTABLES_BIN", "iptables")?,
        ip6tables: program("WEFT_IP6TABLES_BIN", "ip6tables")?,
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

/// The tools, or `None` after printing why the test skips; under CI (env
/// `CI` set) a missing prerequisite fails the test instead.
pub fn tools_or_skip(test: &str) -> Option<Tools> {
    match prerequisites() {
        Ok(tools) => Some(tools),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// Prints why `test` skips; under CI (env `CI` set) fails it instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// `target/<profile>/NAME`: tests run from `target/<profile>/deps/`, two levels below.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("test binary lives in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "binary {} is missing: run `cargo build -p weft-proxy` (and `-p weft-control-plane`) first",
        bin.display()
    );
    bin
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Runs a command to completion, killing it after `STEP_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
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

/// Namespaces, the processes in them and a scratch dir (readable by the
/// unprivileged proxy); all removed on drop.
pub struct Sandbox {
    pub tools: Tools,
    pub namespaces: Vec<String>,
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Sandbox {
    /// A sandbox with an empty scratch dir `weft-<tag>-<pid>` (mode 755)
    /// and no namespaces yet.
    pub fn new(tools: Tools, tag: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("weft-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        Sandbox {
            tools,
            namespaces: Vec::new(),
            dir,
            children: Vec::new(),
        }
    }

    /// A copy of `bin` in the scratch dir, executable by anyone (the
    /// workspace may sit under a directory nobody cannot enter).
    pub fn install(&self, bin: &Path) -> String {
        let name = bin.file_name().expect("binary name");
        let dest = self.dir.join(name);
        if fs::hard_link(bin, &dest).is_err() {
            fs::copy(bin, &dest).expect("copy binary");
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).expect("chmod binary");
        dest.to_string_lossy().into_owned()
    }

    /// Writes `contents` to `name` in the scratch dir, readable by anyone.
    pub fn write(&self, name: &str, contents: &[u8]) -> String {
        let path = self.dir.join(name);
        fs::write(&path, contents).expect("write file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod file");
        path.to_string_lossy().into_owned()
    }

    /// Creates namespace `name` (removed on drop) with loopback up.
    pub fn add_namespace(&mut self, name: &str) {
        let _ = run(Command::new(&self.tools.ip).args(["netns", "del", name]));
        let out = run(Command::new(&self.tools.ip).args(["netns", "add", name]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            text(&out.stderr)
        );
        self.namespaces.push(name.to_string());
        self.ip(name, "link set lo up");
    }

    /// `ip -n NS ARGS`, panicking unless it succeeds.
    pub fn ip(&self, ns: &str, args: &str) {
        let out = run(Command::new(&self.tools.ip)
            .args(["-n", ns])
            .args(args.split_whitespace()))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "ip -n {ns} {args}: {}",
            text(&out.stderr)
        );
    }

    /// Joins `a` (address `a_cidr`) and `b` (`b_cidr`) by a veth pair.
    pub fn link(&self, a: &str, a_cidr: &str, b: &str, b_cidr: &str) {
        self.ip(
            a,
            &format!("link add veth0 type veth peer name veth1 netns {b}"),
        );
        self.ip(a, &format!("addr add {a_cidr} dev veth0"));
        self.ip(b, &format!("addr add {b_cidr} dev veth1"));
        self.ip(a, "link set veth0 up");
        self.ip(b, "link set veth1 up");
    }

    /// Runs `args` inside namespace `ns`, panicking with its output unless it succeeds.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let out = self.try_exec(ns, args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{args:?} in {ns} failed: {stdout}\n{stderr}"
        );
        stdout
    }

    /// Runs `args` inside namespace `ns`, whatever its exit status.
    pub fn try_exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.tools.ip);
        cmd.args(["netns", "exec", ns]).args(args);
        cmd.env("WEFT_IPTABLES_BIN", &self.tools.iptables);
        cmd.env("WEFT_IP6TABLES_BIN", &self.tools.ip6tables);
        run(&mut cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a long-running process inside `ns`, logging to `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str]) {
        self.spawn_env(name, ns, &[], args);
    }

    /// [`Sandbox::spawn`] with environment variables set.
    pub fn spawn_env(&mut self, name: &str, ns: &str, env: &[(&str, &str)], args: &[&str]) {
        let log = fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.tools.ip)
            .args(["netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Starts `args` inside `ns` as the proxy's uid ([`PROXY_UID`]).
    pub fn spawn_as_proxy(&mut self, name: &str, ns: &str, args: &[&str]) {
        self.spawn_as(name, ns, PROXY_UID, &[], args);
    }

    /// Starts `args` inside `ns` as user and group `id` (no supplementary
    /// groups), with `env` set: a container's process under its own uid.
    pub fn spawn_as(&mut self, name: &str, ns: &str, id: u32, env: &[(&str, &str)], args: &[&str]) {
        let as_id = self.as_user(id);
        let mut all: Vec<&str> = as_id.iter().map(String::as_str).collect();
        all.extend(args);
        self.spawn_env(name, ns, env, &all);
    }

    /// The `setpriv` prefix that runs a command as user and group `id`.
    fn as_user(&self, id: u32) -> [String; 4] {
        [
            self.tools.setpriv.to_string_lossy().into_owned(),
            format!("--reuid={id}"),
            format!("--regid={id}"),
            "--clear-groups".into(),
        ]
    }

    /// `weft-proxy iptables` inside `ns` with `extra` flags, checked.
    pub fn intercept(&self, ns: &str, proxy: &str, extra: &[&str]) {
        let uid = PROXY_UID.to_string();
        let mut args = vec![proxy, "iptables", "--proxy-uid", &uid];
        args.extend(extra);
        self.exec(ns, &args);
        let iptables = self.tools.iptables.to_string_lossy().into_owned();
        let nat = self.exec(ns, &[&iptables, "-t", "nat", "-S"]);
        assert!(
            nat.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"),
            "rules not installed in {ns}:\n{nat}"
        );
    }

    /// A `python3` that a user without privileges can run (every directory
    /// on its real path searchable by others): the tools' own may live
    /// under root's home.
    pub fn python_for_anyone(&self) -> Option<PathBuf> {
        let open_to_others = |p: &Path| {
            let real = fs::canonicalize(p).ok()?;
            let ok = real
                .ancestors()
                .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
            ok.then_some(real)
        };
        [
            self.tools.python3.clone(),
            PathBuf::from("/usr/bin/python3"),
            PathBuf::from("/usr/local/bin/python3"),
        ]
        .iter()
        .find_map(|p| open_to_others(p))
    }

    /// `curl` inside `ns`: (status code, body). Plain curl: no proxy settings at all.
    pub fn curl(&self, ns: &str, extra: &[&str], url: &str) -> (u16, String) {
        self.curl_as(None, ns, extra, url)
    }

    /// [`Sandbox::curl`] as user and group `id` when given (an app's own uid).
    pub fn curl_as(&self, id: Option<u32>, ns: &str, extra: &[&str], url: &str) -> (u16, String) {
        let as_id = id.map(|id| self.as_user(id));
        let curl = self.tools.curl.to_string_lossy().into_owned();
        let mut args: Vec<&str> = as_id.iter().flatten().map(String::as_str).collect();
        args.extend([curl.as_str(), "-s", "--noproxy", "*", "--max-time", "5"]);
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
    pub fn wait_ready(&mut self, ns: &str, url: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while Instant::now() < deadline {
            self.check_children();
            if self.curl(ns, &[], url).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{url} in {ns} not ready within {STEP_TIMEOUT:?}");
    }

    /// Panics if a process started here has exited.
    pub fn check_children(&mut self) {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited early ({status})");
            }
        }
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
        for ns in &self.namespaces {
            let _ = run(Command::new(&self.tools.ip).args(["netns", "del", ns]));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A TCP listener on `addr` inside namespace `ns`, opened by this process
/// (a thread enters the namespace, binds, and exits): connections to it
/// arrive here, so the test can relay a pod to something on the host.
pub fn listen_in(ns: &str, addr: std::net::SocketAddr) -> std::net::TcpListener {
    let path = PathBuf::from("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let f = fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a valid namespace fd affects only this thread,
        // which ends right after binding.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let l = std::net::TcpListener::bind(addr).expect("bind in namespace");
        l.set_nonblocking(true).expect("nonblocking");
        l
    })
    .join()
    .expect("namespace thread")
}
