//! Transparent interception: the nat-table rules `weft-proxy iptables` installs in a pod's
//! network namespace so that the unmodified app's TCP traffic goes through the sidecar, for
//! IPv4 (`iptables`) and IPv6 (`ip6tables`) alike.
//!
//! Outbound TCP from the app is REDIRECTed to the outbound listener, except traffic of the
//! proxy's own uid/gid (its upstream connections would loop otherwise), loopback destinations
//! and the excluded CIDRs/ports. Inbound TCP arriving at the pod is REDIRECTed to the inbound
//! listener, except the excluded ports and the proxy's own listener ports (outbound, inbound,
//! probes). The proxy then recovers the original destination with `SO_ORIGINAL_DST` (see
//! `listen::orig_dst`). Everything lives in dedicated chains (`WEFT_OUTPUT`, `WEFT_REDIRECT`,
//! `WEFT_INBOUND`, `WEFT_IN_REDIRECT`) jumped to from `OUTPUT` and `PREROUTING`, so
//! uninstalling is clean. The rules themselves are in [`rules`].
//!
//! IPv6: an IPv6 REDIRECT delivers to `[::1]` (outbound) or the pod's own IPv6 address
//! (inbound), so the proxy listens there too: `weft-proxy run` adds `[::1]:<port>` beside an
//! IPv4-loopback `--outbound` and `[::]:<port>` beside an any-address `--inbound`. A
//! namespace with IPv6 off (no `/proc/net/if_inet6`) gets IPv4 rules only.
//!
//! # CLI contract (`weft-proxy iptables`), mirroring [`InterceptOptions`]
//!
//! | flag | value | default | field |
//! | --- | --- | --- | --- |
//! | `--outbound-port` | port | `15001` | `outbound_port` |
//! | `--inbound-port` | port | `15006` | `inbound_port` |
//! | `--probe-port` | port | `15020` | `probe_port` |
//! | `--proxy-uid` | uid | required unless `--uninstall` | `proxy_uid` |
//! | `--proxy-gid` | gid | none | `proxy_gid` |
//! | `--exclude-inbound-ports` | comma-separated ports | empty | `exclude_inbound_ports` |
//! | `--exclude-outbound-ports` | comma-separated ports | empty | `exclude_outbound_ports` |
//! | `--exclude-outbound-cidrs` | comma-separated IPv4 or IPv6 CIDRs | empty | `exclude_outbound_cidrs` |
//! | `--no-intercept-inbound` | switch | off | `intercept_inbound = !flag` |
//! | `--dry-run` | switch | off | prints the commands instead of running them |
//! | `--uninstall` | switch | off | calls [`uninstall`] instead of [`install`] |
//!
//! List flags take `value_delimiter = ','` and may be repeated. The programs are `iptables`
//! and `ip6tables` from `PATH`, or `$WEFT_IPTABLES_BIN` / `$WEFT_IP6TABLES_BIN` (e.g.
//! `iptables-legacy`).

mod error;
mod options;
pub mod rules;

pub use error::IptablesError;
pub use options::{Family, InterceptOptions};
pub use rules::{rules, uninstall_rules};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Env var naming the iptables program, because nodes differ (iptables-legacy vs -nft).
pub const IPTABLES_BIN_ENV: &str = "WEFT_IPTABLES_BIN";
/// Env var naming the ip6tables program.
pub const IP6TABLES_BIN_ENV: &str = "WEFT_IP6TABLES_BIN";

/// Upper bound on deleting duplicated jumps (install run twice without uninstall).
const MAX_JUMP_DELETES: usize = 16;

/// The program for `family`: `$WEFT_IPTABLES_BIN` / `$WEFT_IP6TABLES_BIN`, else
/// `iptables` / `ip6tables`.
fn bin(family: Family) -> String {
    let (env, default) = match family {
        Family::V4 => (IPTABLES_BIN_ENV, "iptables"),
        Family::V6 => (IP6TABLES_BIN_ENV, "ip6tables"),
    };
    std::env::var(env)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The families to act on: IPv6 only where the namespace has it (a kernel or pod with IPv6
/// disabled has no `ip6tables` nat table to fill, and no IPv6 traffic to catch).
fn families() -> Vec<Family> {
    if Path::new("/proc/net/if_inet6").exists() {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

/// Installs the interception for both families (or, with `dry_run`, prints the commands as
/// shell lines to `out`, both families whatever this namespace has). Any previous Weft rules
/// are removed first, so re-running an init container is safe; if a command fails, what was
/// added is removed again (both families) before the error is returned.
pub fn install(
    opts: &InterceptOptions,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), IptablesError> {
    opts.validate()?;
    if dry_run {
        for family in [Family::V4, Family::V6] {
            let bin = bin(family);
            writeln!(
                out,
                "# {}: remove previous weft rules (failures ignored)",
                family.label()
            )?;
            print(&bin, &uninstall_rules(), out)?;
            writeln!(out, "# {}: install", family.label())?;
            print(&bin, &rules(opts, family), out)?;
        }
        return Ok(());
    }
    let families = families();
    for family in &families {
        remove_all(&bin(*family))?;
    }
    let mut count = 0;
    for family in &families {
        for args in &rules(opts, *family) {
            if let Err(e) = run(&bin(*family), args) {
                // Best effort: leave the namespace as it was rather than half intercepted.
                for f in &families {
                    let _ = remove_all(&bin(*f));
                }
                return Err(e);
            }
            count += 1;
        }
    }
    let labels: Vec<_> = families.iter().map(|f| f.label()).collect();
    Ok(writeln!(
        out,
        "weft: installed {count} rules ({})",
        labels.join(" and ")
    )?)
}

/// Removes every Weft rule and chain of both families (or, with `dry_run`, prints the
/// commands). Rules or chains that do not exist are not an error, so this is safe to run on
/// a clean namespace.
pub fn uninstall(dry_run: bool, out: &mut impl Write) -> Result<(), IptablesError> {
    if dry_run {
        for family in [Family::V4, Family::V6] {
            print(&bin(family), &uninstall_rules(), out)?;
        }
        return Ok(());
    }
    for family in families() {
        remove_all(&bin(family))?;
    }
    Ok(writeln!(out, "weft: removed the interception rules")?)
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
    fn validation_rejects_bad_options() {
        let bad = |opts: InterceptOptions, flag: &str, needle: &str| {
            let err = opts.validate().expect_err("must be rejected").to_string();
            assert!(err.contains(flag) && err.contains(needle), "{err}");
        };
        assert!(InterceptOptions::new(1).validate().is_ok());
        bad(with(|o| o.outbound_port = 0), "--outbound-port", "port 0");
        bad(with(|o| o.inbound_port = 0), "--inbound-port", "port 0");
        bad(with(|o| o.probe_port = 0), "--probe-port", "port 0");
        bad(with(|o| o.inbound_port = 15001), "--inbound-port", "differ");
        bad(with(|o| o.probe_port = 15006), "--probe-port", "differ");
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
        for cidr in ["10.0.0.0/33", "fd00::/200", "10.0.0/8", "", "1.2.3.4 -j X"] {
            let opts = with(|o| o.exclude_outbound_cidrs = vec![cidr.into()]);
            bad(opts, "--exclude-outbound-cidrs", "CIDR");
        }
        for cidr in ["0.0.0.0/0", "10.1.2.3/32", "192.168.0.1", "fd00::/8", "::1"] {
            let opts = with(|o| o.exclude_outbound_cidrs = vec![cidr.into()]);
            assert!(opts.validate().is_ok(), "{cidr}");
        }
    }

    #[test]
    fn dry_run_prints_both_families_and_runs_nothing() {
        let (v4, v6) = (bin(Family::V4), bin(Family::V6));
        let opts =
            with(|o| o.exclude_outbound_cidrs = vec!["10.0.0.0/8".into(), "fd00::/8".into()]);
        let mut out = Vec::new();
        install(&opts, true, &mut out).expect("dry run");
        let want = format!(
            "# IPv4: remove previous weft rules (failures ignored)\n{}# IPv4: install\n{}\
             # IPv6: remove previous weft rules (failures ignored)\n{}# IPv6: install\n{}",
            text(&v4, &uninstall_rules()),
            text(&v4, &rules(&opts, Family::V4)),
            text(&v6, &uninstall_rules()),
            text(&v6, &rules(&opts, Family::V6)),
        );
        let printed = String::from_utf8_lossy(&out);
        assert_eq!(printed, want);
        // Each family's CIDR in its own table only.
        let (four, six) = printed.split_once("# IPv6").expect("two sections");
        assert!(four.contains("-d 10.0.0.0/8 ") && !four.contains("fd00::/8"));
        assert!(six.contains("-d fd00::/8 ") && !six.contains("10.0.0.0/8"));
        assert!(six.contains("-d ::1/128 ") && !six.contains("127.0.0.0/8"));
        let mut out = Vec::new();
        uninstall(true, &mut out).expect("dry run");
        assert_eq!(
            String::from_utf8_lossy(&out),
            text(&v4, &uninstall_rules()) + &text(&v6, &uninstall_rules())
        );
        // An invalid option fails before printing anything.
        let mut out = Vec::new();
        assert!(install(&with(|o| o.outbound_port = 0), true, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn quoting_and_missing_rule_messages() {
        assert_eq!(shell_quote("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(shell_quote("fd00::/8"), "fd00::/8");
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
