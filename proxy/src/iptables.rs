//! Transparent interception: the nat-table rules `weft-proxy iptables` installs in a pod's
//! network namespace so that the unmodified app's TCP traffic goes through the sidecar.
//!
//! Outbound TCP from the app is REDIRECTed to the outbound listener, except traffic of the
//! proxy's own uid/gid (its upstream connections would loop otherwise), loopback destinations
//! and the excluded CIDRs/ports. Inbound TCP arriving at the pod is REDIRECTed to the inbound
//! listener, except the excluded ports and the proxy's own two listener ports. The proxy then
//! recovers the original destination with `SO_ORIGINAL_DST` (see `listen::orig_dst`).
//! Everything lives in dedicated chains (`WEFT_OUTPUT`, `WEFT_REDIRECT`, `WEFT_INBOUND`,
//! `WEFT_IN_REDIRECT`) jumped to from `OUTPUT` and `PREROUTING`, so uninstalling is clean.
//!
//! # CLI contract (`weft-proxy iptables`), mirroring [`InterceptOptions`]
//!
//! | flag | value | default | field |
//! | --- | --- | --- | --- |
//! | `--outbound-port` | port | `15001` | `outbound_port` |
//! | `--inbound-port` | port | `15006` | `inbound_port` |
//! | `--proxy-uid` | uid | required unless `--uninstall` | `proxy_uid` |
//! | `--proxy-gid` | gid | none | `proxy_gid` |
//! | `--exclude-inbound-ports` | comma-separated ports | empty | `exclude_inbound_ports` |
//! | `--exclude-outbound-ports` | comma-separated ports | empty | `exclude_outbound_ports` |
//! | `--exclude-outbound-cidrs` | comma-separated IPv4 CIDRs | empty | `exclude_outbound_cidrs` |
//! | `--no-intercept-inbound` | switch | off | `intercept_inbound = !flag` |
//! | `--dry-run` | switch | off | prints the commands instead of running them |
//! | `--uninstall` | switch | off | calls [`uninstall`] instead of [`install`] |
//!
//! List flags take `value_delimiter = ','` and may be repeated. The iptables program is
//! `iptables` from `PATH`, or `$WEFT_IPTABLES_BIN` (e.g. `iptables-legacy`). IPv4 only.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;

/// Env var naming the iptables program, because nodes differ (iptables-legacy vs -nft).
pub const IPTABLES_BIN_ENV: &str = "WEFT_IPTABLES_BIN";

const OUT_CHAIN: &str = "WEFT_OUTPUT";
const OUT_REDIRECT: &str = "WEFT_REDIRECT";
const IN_CHAIN: &str = "WEFT_INBOUND";
const IN_REDIRECT: &str = "WEFT_IN_REDIRECT";
const CHAINS: [&str; 4] = [OUT_CHAIN, OUT_REDIRECT, IN_CHAIN, IN_REDIRECT];
/// Upper bound on deleting duplicated jumps (install run twice without uninstall).
const MAX_JUMP_DELETES: usize = 16;

/// Options of `weft-proxy iptables`: which traffic is intercepted and where it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptOptions {
    /// Port of the outbound listener that receives the app's redirected connections.
    pub outbound_port: u16,
    /// Port of the inbound listener that receives redirected connections for the app.
    pub inbound_port: u16,
    /// Traffic from this uid (the proxy's) is not redirected, so the proxy does not loop.
    pub proxy_uid: u32,
    /// Traffic from this gid is not redirected either, when set.
    pub proxy_gid: Option<u32>,
    /// Inbound destination ports left alone (e.g. 15000 admin, 22).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination IPv4 CIDRs (or bare addresses) left alone.
    pub exclude_outbound_cidrs: Vec<String>,
    /// Whether inbound traffic is intercepted at all.
    pub intercept_inbound: bool,
}

impl InterceptOptions {
    /// The defaults of the CLI for a proxy running as `proxy_uid`, so callers spell out only
    /// what differs.
    pub fn new(proxy_uid: u32) -> Self {
        Self {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid,
            proxy_gid: None,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            intercept_inbound: true,
        }
    }

    /// Rejects options that would install broken or self-defeating rules, before any rule is
    /// touched, so the operator gets a clear message instead of a half-installed namespace.
    pub fn validate(&self) -> Result<(), IptablesError> {
        let port_lists: [(&'static str, &[u16]); 4] = [
            ("--outbound-port", &[self.outbound_port]),
            ("--inbound-port", &[self.inbound_port]),
            ("--exclude-inbound-ports", &self.exclude_inbound_ports),
            ("--exclude-outbound-ports", &self.exclude_outbound_ports),
        ];
        if let Some((option, _)) = port_lists.iter().find(|(_, ports)| ports.contains(&0)) {
            return Err(invalid(option, "port 0 is not valid".into()));
        }
        if self.intercept_inbound && self.inbound_port == self.outbound_port {
            let reason = format!("must differ from --outbound-port ({})", self.outbound_port);
            return Err(invalid("--inbound-port", reason));
        }
        for cidr in &self.exclude_outbound_cidrs {
            validate_cidr(cidr).map_err(|reason| invalid("--exclude-outbound-cidrs", reason))?;
        }
        Ok(())
    }
}

fn invalid(option: &'static str, reason: String) -> IptablesError {
    IptablesError::InvalidOption(option, reason)
}

fn validate_cidr(cidr: &str) -> Result<(), String> {
    let cidr = cidr.trim();
    let (addr, prefix) = match cidr.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (cidr, None),
    };
    if addr.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "{cidr:?} is not an IPv4 CIDR (expected a.b.c.d/len; IPv6 is not intercepted)"
        ));
    }
    match prefix.map(str::parse::<u8>) {
        None | Some(Ok(0..=32)) => Ok(()),
        Some(_) => Err(format!(
            "{cidr:?} is not an IPv4 CIDR (prefix length must be 0-32)"
        )),
    }
}

/// Failures of installing or removing the rules; carries the command line and iptables'
/// stderr because the operator has to act on exactly what iptables said.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// An option was rejected by [`InterceptOptions::validate`]: (CLI flag, reason).
    #[error("invalid {0}: {1}")]
    InvalidOption(&'static str, String),
    /// The iptables program could not be started (missing binary, permissions).
    #[error("could not run `{0}`: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// iptables ran and failed: (command line, exit status, stderr).
    #[error("`{0}` failed ({1}): {2}")]
    Failed(String, String, String),
    /// Writing the dry-run or progress output failed.
    #[error("could not write output: {0}")]
    Output(#[from] std::io::Error),
}

/// `-t nat` followed by the whitespace-separated words of `spec` (no argument here ever
/// contains whitespace: ports and uids are numbers, CIDRs are validated).
fn nat(spec: &str) -> Vec<String> {
    ["-t", "nat"]
        .into_iter()
        .chain(spec.split_whitespace())
        .map(String::from)
        .collect()
}

/// The iptables argument lists (without the program name) that install the interception, in
/// order: chains are filled before `OUTPUT`/`PREROUTING` jump to them, so no packet ever sees
/// a half-built chain. Assumes [`InterceptOptions::validate`] passed.
pub fn rules(opts: &InterceptOptions) -> Vec<Vec<String>> {
    let mut r = vec![
        nat(&format!("-N {OUT_REDIRECT}")),
        nat(&format!(
            "-A {OUT_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            opts.outbound_port
        )),
        nat(&format!("-N {OUT_CHAIN}")),
    ];
    let mut skip_out = |m: String| r.push(nat(&format!("-A {OUT_CHAIN} {m} -j RETURN")));
    skip_out(format!("-m owner --uid-owner {}", opts.proxy_uid));
    if let Some(gid) = opts.proxy_gid {
        skip_out(format!("-m owner --gid-owner {gid}"));
    }
    skip_out("-d 127.0.0.0/8".into());
    for cidr in &opts.exclude_outbound_cidrs {
        skip_out(format!("-d {}", cidr.trim()));
    }
    for port in dedup(&opts.exclude_outbound_ports) {
        skip_out(format!("-p tcp --dport {port}"));
    }
    r.push(nat(&format!("-A {OUT_CHAIN} -j {OUT_REDIRECT}")));
    if opts.intercept_inbound {
        r.push(nat(&format!("-N {IN_REDIRECT}")));
        let port = opts.inbound_port;
        r.push(nat(&format!(
            "-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {port}"
        )));
        r.push(nat(&format!("-N {IN_CHAIN}")));
        // The proxy's own listeners are never redirected to the inbound listener.
        let mut excluded = vec![opts.outbound_port, opts.inbound_port];
        excluded.extend(&opts.exclude_inbound_ports);
        for port in dedup(&excluded) {
            r.push(nat(&format!(
                "-A {IN_CHAIN} -p tcp --dport {port} -j RETURN"
            )));
        }
        r.push(nat(&format!("-A {IN_CHAIN} -p tcp -j {IN_REDIRECT}")));
        r.push(nat(&format!("-A PREROUTING -p tcp -j {IN_CHAIN}")));
    }
    r.push(nat(&format!("-A OUTPUT -p tcp -j {OUT_CHAIN}")));
    r
}

fn dedup(ports: &[u16]) -> Vec<u16> {
    let mut seen = Vec::with_capacity(ports.len());
    for p in ports {
        if !seen.contains(p) {
            seen.push(*p);
        }
    }
    seen
}

/// The argument lists that remove everything [`rules`] may have added, whatever its options
/// were: unhook the jumps, then flush and delete the chains. Each may fail with "does not
/// exist", which [`uninstall`] ignores.
pub fn uninstall_rules() -> Vec<Vec<String>> {
    let mut r = vec![
        nat(&format!("-D OUTPUT -p tcp -j {OUT_CHAIN}")),
        nat(&format!("-D PREROUTING -p tcp -j {IN_CHAIN}")),
    ];
    r.extend(CHAINS.iter().map(|c| nat(&format!("-F {c}"))));
    r.extend(CHAINS.iter().map(|c| nat(&format!("-X {c}"))));
    r
}

/// The iptables program to run: `$WEFT_IPTABLES_BIN` or `iptables`.
fn iptables_bin() -> String {
    std::env::var(IPTABLES_BIN_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "iptables".to_string())
}

/// Installs the interception (or, with `dry_run`, prints the commands as shell lines to
/// `out`). Any previous Weft rules are removed first, so re-running an init container is
/// safe; if a command fails, what was added is removed again before the error is returned.
pub fn install(
    opts: &InterceptOptions,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), IptablesError> {
    opts.validate()?;
    let bin = iptables_bin();
    if dry_run {
        writeln!(out, "# remove previous weft rules (failures ignored)")?;
        print(&bin, &uninstall_rules(), out)?;
        writeln!(out, "# install")?;
        return print(&bin, &rules(opts), out);
    }
    remove_all(&bin)?;
    let rules = rules(opts);
    for args in &rules {
        if let Err(e) = run(&bin, args) {
            // Best effort: leave the namespace as it was rather than half intercepted.
            let _ = remove_all(&bin);
            return Err(e);
        }
    }
    Ok(writeln!(
        out,
        "weft: installed {} iptables rules",
        rules.len()
    )?)
}

/// Removes every Weft rule and chain (or, with `dry_run`, prints the commands). Rules or
/// chains that do not exist are not an error, so this is safe to run on a clean namespace.
pub fn uninstall(dry_run: bool, out: &mut impl Write) -> Result<(), IptablesError> {
    let bin = iptables_bin();
    if dry_run {
        return print(&bin, &uninstall_rules(), out);
    }
    remove_all(&bin)?;
    Ok(writeln!(out, "weft: removed iptables rules")?)
}

fn print(bin: &str, lines: &[Vec<String>], out: &mut impl Write) -> Result<(), IptablesError> {
    for args in lines {
        writeln!(out, "{}", command_line(bin, args))?;
    }
    Ok(())
}

fn remove_all(bin: &str) -> Result<(), IptablesError> {
    for args in uninstall_rules() {
        // A jump may have been added more than once; delete until none is left.
        let repeats = if args[2] == "-D" { MAX_JUMP_DELETES } else { 1 };
        for _ in 0..repeats {
            match run(bin, &args) {
                Ok(()) => {}
                Err(IptablesError::Failed(_, _, stderr)) if is_missing(&stderr) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Whether iptables' message means "the rule or chain is not there" (nft and legacy wordings).
fn is_missing(stderr: &str) -> bool {
    [
        "does not exist",
        "doesn't exist",
        "No chain/target/match by that name",
        "does a matching rule exist",
        "Couldn't load target",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

fn run(bin: &str, args: &[String]) -> Result<(), IptablesError> {
    let output = Command::new(bin)
        .args(args)
        .output()
        .map_err(|e| IptablesError::Spawn(command_line(bin, args), e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(IptablesError::Failed(
        command_line(bin, args),
        output.status.to_string(),
        stderr,
    ))
}

/// `bin args...` quoted for a POSIX shell, so dry-run output can be pasted or piped to `sh`.
fn command_line(bin: &str, args: &[String]) -> String {
    std::iter::once(bin)
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:,=@%+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bin: &str, rules: &[Vec<String>]) -> String {
        rules.iter().map(|a| command_line(bin, a) + "\n").collect()
    }

    fn with(f: impl FnOnce(&mut InterceptOptions)) -> InterceptOptions {
        let mut opts = InterceptOptions::new(65534);
        f(&mut opts);
        opts
    }

    #[test]
    fn default_rules_are_exact() {
        let want = "\
iptables -t nat -N WEFT_REDIRECT
iptables -t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
iptables -t nat -N WEFT_OUTPUT
iptables -t nat -A WEFT_OUTPUT -m owner --uid-owner 65534 -j RETURN
iptables -t nat -A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN
iptables -t nat -A WEFT_OUTPUT -j WEFT_REDIRECT
iptables -t nat -N WEFT_IN_REDIRECT
iptables -t nat -A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
iptables -t nat -N WEFT_INBOUND
iptables -t nat -A WEFT_INBOUND -p tcp --dport 15001 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp --dport 15006 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
iptables -t nat -A PREROUTING -p tcp -j WEFT_INBOUND
iptables -t nat -A OUTPUT -p tcp -j WEFT_OUTPUT
";
        assert_eq!(
            text("iptables", &rules(&InterceptOptions::new(65534))),
            want
        );
    }

    #[test]
    fn exclusions_are_exact_and_deduplicated() {
        let mut opts = with(|o| {
            (o.outbound_port, o.inbound_port) = (16001, 16006);
            (o.proxy_uid, o.proxy_gid) = (1337, Some(1338));
            o.exclude_inbound_ports = vec![15000, 22, 16006];
            o.exclude_outbound_ports = vec![5432, 5432, 6379];
            o.exclude_outbound_cidrs = vec!["10.0.0.0/8".into(), " 169.254.169.254 ".into()];
        });
        let want = "\
iptables -t nat -N WEFT_REDIRECT
iptables -t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 16001
iptables -t nat -N WEFT_OUTPUT
iptables -t nat -A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN
iptables -t nat -A WEFT_OUTPUT -m owner --gid-owner 1338 -j RETURN
iptables -t nat -A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN
iptables -t nat -A WEFT_OUTPUT -d 10.0.0.0/8 -j RETURN
iptables -t nat -A WEFT_OUTPUT -d 169.254.169.254 -j RETURN
iptables -t nat -A WEFT_OUTPUT -p tcp --dport 5432 -j RETURN
iptables -t nat -A WEFT_OUTPUT -p tcp --dport 6379 -j RETURN
iptables -t nat -A WEFT_OUTPUT -j WEFT_REDIRECT
";
        let inbound = "\
iptables -t nat -N WEFT_IN_REDIRECT
iptables -t nat -A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006
iptables -t nat -N WEFT_INBOUND
iptables -t nat -A WEFT_INBOUND -p tcp --dport 16001 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp --dport 16006 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp --dport 15000 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp --dport 22 -j RETURN
iptables -t nat -A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
iptables -t nat -A PREROUTING -p tcp -j WEFT_INBOUND
";
        let jump = "iptables -t nat -A OUTPUT -p tcp -j WEFT_OUTPUT\n";
        assert!(opts.validate().is_ok());
        assert_eq!(
            text("iptables", &rules(&opts)),
            [want, inbound, jump].concat()
        );
        opts.intercept_inbound = false;
        assert_eq!(text("iptables", &rules(&opts)), [want, jump].concat());
    }

    #[test]
    fn uninstall_removes_every_chain_and_jump() {
        let want = "\
iptables -t nat -D OUTPUT -p tcp -j WEFT_OUTPUT
iptables -t nat -D PREROUTING -p tcp -j WEFT_INBOUND
iptables -t nat -F WEFT_OUTPUT
iptables -t nat -F WEFT_REDIRECT
iptables -t nat -F WEFT_INBOUND
iptables -t nat -F WEFT_IN_REDIRECT
iptables -t nat -X WEFT_OUTPUT
iptables -t nat -X WEFT_REDIRECT
iptables -t nat -X WEFT_INBOUND
iptables -t nat -X WEFT_IN_REDIRECT
";
        assert_eq!(text("iptables", &uninstall_rules()), want);
        // Every jump and chain that install adds is removed by the very same spec.
        for mut rule in rules(&InterceptOptions::new(1)) {
            match rule[2].as_str() {
                "-A" if rule[3] == "OUTPUT" || rule[3] == "PREROUTING" => rule[2] = "-D".into(),
                "-N" => rule[2] = "-X".into(),
                _ => continue,
            }
            assert!(uninstall_rules().contains(&rule), "{rule:?}");
        }
    }

    #[test]
    fn validation_rejects_bad_options() {
        let bad = |opts: InterceptOptions, flag: &str, needle: &str| {
            let err = opts.validate().expect_err("must be rejected").to_string();
            assert!(err.contains(flag) && err.contains(needle), "{err}");
        };
        assert!(InterceptOptions::new(1).validate().is_ok());
        bad(with(|o| o.outbound_port = 0), "--outbound-port", "port 0");
        bad(with(|o| o.inbound_port = 0), "--inbound-port", "port 0");
        bad(with(|o| o.inbound_port = 15001), "--inbound-port", "differ");
        let no_inbound = with(|o| (o.inbound_port, o.intercept_inbound) = (15001, false));
        assert!(no_inbound.validate().is_ok());
        bad(
            with(|o| o.exclude_inbound_ports = vec![22, 0]),
            "--exclude-inbound-ports",
            "port 0",
        );
        bad(
            with(|o| o.exclude_outbound_ports = vec![0]),
            "--exclude-outbound-ports",
            "port 0",
        );
        for cidr in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/8",
            "10.0.0.0/x",
            "",
            "1.2.3.4 -j X",
        ] {
            let opts = with(|o| o.exclude_outbound_cidrs = vec![cidr.into()]);
            bad(opts, "--exclude-outbound-cidrs", "CIDR");
        }
        for cidr in ["0.0.0.0/0", "10.1.2.3/32", "192.168.0.1"] {
            let opts = with(|o| o.exclude_outbound_cidrs = vec![cidr.into()]);
            assert!(opts.validate().is_ok(), "{cidr}");
        }
    }

    #[test]
    fn dry_run_prints_shell_lines_and_runs_nothing() {
        let bin = iptables_bin();
        let opts = InterceptOptions::new(65534);
        let mut out = Vec::new();
        install(&opts, true, &mut out).expect("dry run");
        let want = format!(
            "# remove previous weft rules (failures ignored)\n{}# install\n{}",
            text(&bin, &uninstall_rules()),
            text(&bin, &rules(&opts))
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        let mut out = Vec::new();
        uninstall(true, &mut out).expect("dry run");
        assert_eq!(
            String::from_utf8_lossy(&out),
            text(&bin, &uninstall_rules())
        );
        // An invalid option fails before printing anything.
        let mut out = Vec::new();
        assert!(install(&with(|o| o.outbound_port = 0), true, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn quoting_and_missing_rule_messages() {
        assert_eq!(shell_quote("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let line = command_line("/opt/my iptables", &["-t".into(), "nat".into()]);
        assert_eq!(line, "'/opt/my iptables' -t nat");
        assert!(is_missing("iptables: No chain/target/match by that name."));
        assert!(is_missing(
            "iptables: Bad rule (does a matching rule exist in that chain?)."
        ));
        assert!(is_missing(
            "iptables v1.8.9 (nf_tables): Chain 'WEFT_OUTPUT' does not exist"
        ));
        assert!(is_missing(
            "iptables v1.8.9 (legacy): Couldn't load target `WEFT_OUTPUT'"
        ));
        assert!(!is_missing(
            "iptables: Permission denied (you must be root)."
        ));
    }
}
