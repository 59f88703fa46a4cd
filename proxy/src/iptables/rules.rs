//! The nat-table rules themselves, for one address family at a time:
//! `iptables` and `ip6tables` get the same chains and the same exemptions,
//! each with its own loopback range and the excluded CIDRs of its family.
//! Pure functions of the options, so the exact text is tested without root.

use super::options::{cidr_family, Family, InterceptOptions};

pub(super) const OUT_CHAIN: &str = "WEFT_OUTPUT";
pub(super) const OUT_REDIRECT: &str = "WEFT_REDIRECT";
pub(super) const IN_CHAIN: &str = "WEFT_INBOUND";
pub(super) const IN_REDIRECT: &str = "WEFT_IN_REDIRECT";
const CHAINS: [&str; 4] = [OUT_CHAIN, OUT_REDIRECT, IN_CHAIN, IN_REDIRECT];

/// `-t nat` followed by the whitespace-separated words of `spec` (no argument here ever
/// contains whitespace: ports and uids are numbers, CIDRs are validated).
fn nat(spec: &str) -> Vec<String> {
    ["-t", "nat"]
        .into_iter()
        .chain(spec.split_whitespace())
        .map(String::from)
        .collect()
}

/// The argument lists (without the program name) that install the interception for
/// `family`, in order: chains are filled before `OUTPUT`/`PREROUTING` jump to them, so no
/// packet ever sees a half-built chain. Assumes [`InterceptOptions::validate`] passed.
pub fn rules(opts: &InterceptOptions, family: Family) -> Vec<Vec<String>> {
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
    skip_out(format!("-d {}", family.loopback()));
    for cidr in &opts.exclude_outbound_cidrs {
        if cidr_family(cidr) == Ok(family) {
            skip_out(format!("-d {}", cidr.trim()));
        }
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
        // The proxy's own listeners (the probe listener included: the kubelet
        // reaches it in plain HTTP) are never redirected to the inbound one.
        let mut excluded = vec![opts.outbound_port, opts.inbound_port, opts.probe_port];
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
/// were (the same for both families): unhook the jumps, then flush and delete the chains.
/// Each may fail with "does not exist", which uninstalling ignores.
pub fn uninstall_rules() -> Vec<Vec<String>> {
    let mut r = vec![
        nat(&format!("-D OUTPUT -p tcp -j {OUT_CHAIN}")),
        nat(&format!("-D PREROUTING -p tcp -j {IN_CHAIN}")),
    ];
    r.extend(CHAINS.iter().map(|c| nat(&format!("-F {c}"))));
    r.extend(CHAINS.iter().map(|c| nat(&format!("-X {c}"))));
    r
}

#[cfg(test)]
mod tests {
    use super::super::command_line;
    use super::*;

    fn text(bin: &str, rules: &[Vec<String>]) -> String {
        rules.iter().map(|a| command_line(bin, a) + "\n").collect()
    }

    #[test]
    fn default_rules_are_exact_for_both_families() {
        let want = |bin: &str, lo: &str| {
            format!(
                "\
{bin} -t nat -N WEFT_REDIRECT
{bin} -t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001
{bin} -t nat -N WEFT_OUTPUT
{bin} -t nat -A WEFT_OUTPUT -m owner --uid-owner 65534 -j RETURN
{bin} -t nat -A WEFT_OUTPUT -d {lo} -j RETURN
{bin} -t nat -A WEFT_OUTPUT -j WEFT_REDIRECT
{bin} -t nat -N WEFT_IN_REDIRECT
{bin} -t nat -A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
{bin} -t nat -N WEFT_INBOUND
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 15001 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 15006 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 15020 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
{bin} -t nat -A PREROUTING -p tcp -j WEFT_INBOUND
{bin} -t nat -A OUTPUT -p tcp -j WEFT_OUTPUT
"
            )
        };
        let opts = InterceptOptions::new(65534);
        assert_eq!(
            text("iptables", &rules(&opts, Family::V4)),
            want("iptables", "127.0.0.0/8")
        );
        assert_eq!(
            text("ip6tables", &rules(&opts, Family::V6)),
            want("ip6tables", "::1/128")
        );
    }

    #[test]
    fn exclusions_are_exact_deduplicated_and_split_by_family() {
        let mut opts = InterceptOptions::new(1337);
        (opts.outbound_port, opts.inbound_port, opts.probe_port) = (16001, 16006, 16020);
        opts.proxy_gid = Some(1338);
        opts.exclude_inbound_ports = vec![15000, 22, 16006];
        opts.exclude_outbound_ports = vec![5432, 5432, 6379];
        opts.exclude_outbound_cidrs = vec![
            "10.0.0.0/8".into(),
            "fd00:10::/64".into(),
            " 169.254.169.254 ".into(),
            "2001:db8::1".into(),
        ];
        let out = |bin: &str, lo: &str, cidrs: [&str; 2]| {
            format!(
                "\
{bin} -t nat -N WEFT_REDIRECT
{bin} -t nat -A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 16001
{bin} -t nat -N WEFT_OUTPUT
{bin} -t nat -A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN
{bin} -t nat -A WEFT_OUTPUT -m owner --gid-owner 1338 -j RETURN
{bin} -t nat -A WEFT_OUTPUT -d {lo} -j RETURN
{bin} -t nat -A WEFT_OUTPUT -d {} -j RETURN
{bin} -t nat -A WEFT_OUTPUT -d {} -j RETURN
{bin} -t nat -A WEFT_OUTPUT -p tcp --dport 5432 -j RETURN
{bin} -t nat -A WEFT_OUTPUT -p tcp --dport 6379 -j RETURN
{bin} -t nat -A WEFT_OUTPUT -j WEFT_REDIRECT
",
                cidrs[0], cidrs[1]
            )
        };
        let inbound = |bin: &str| {
            format!(
                "\
{bin} -t nat -N WEFT_IN_REDIRECT
{bin} -t nat -A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006
{bin} -t nat -N WEFT_INBOUND
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 16001 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 16006 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 16020 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 15000 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp --dport 22 -j RETURN
{bin} -t nat -A WEFT_INBOUND -p tcp -j WEFT_IN_REDIRECT
{bin} -t nat -A PREROUTING -p tcp -j WEFT_INBOUND
"
            )
        };
        let jump = |bin: &str| format!("{bin} -t nat -A OUTPUT -p tcp -j WEFT_OUTPUT\n");
        assert!(opts.validate().is_ok());
        let v4 = out("iptables", "127.0.0.0/8", ["10.0.0.0/8", "169.254.169.254"]);
        let v6 = out("ip6tables", "::1/128", ["fd00:10::/64", "2001:db8::1"]);
        assert_eq!(
            text("iptables", &rules(&opts, Family::V4)),
            [v4.clone(), inbound("iptables"), jump("iptables")].concat()
        );
        assert_eq!(
            text("ip6tables", &rules(&opts, Family::V6)),
            [v6.clone(), inbound("ip6tables"), jump("ip6tables")].concat()
        );
        opts.intercept_inbound = false;
        assert_eq!(
            text("iptables", &rules(&opts, Family::V4)),
            [v4, jump("iptables")].concat()
        );
        assert_eq!(
            text("ip6tables", &rules(&opts, Family::V6)),
            [v6, jump("ip6tables")].concat()
        );
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
        for family in [Family::V4, Family::V6] {
            for mut rule in rules(&InterceptOptions::new(1), family) {
                match rule[2].as_str() {
                    "-A" if rule[3] == "OUTPUT" || rule[3] == "PREROUTING" => rule[2] = "-D".into(),
                    "-N" => rule[2] = "-X".into(),
                    _ => continue,
                }
                assert!(uninstall_rules().contains(&rule), "{rule:?}");
            }
        }
    }

    #[test]
    fn cidrs_have_one_family_and_a_valid_prefix() {
        for (cidr, family) in [
            ("0.0.0.0/0", Family::V4),
            ("10.1.2.3/32", Family::V4),
            ("192.168.0.1", Family::V4),
            ("::/0", Family::V6),
            ("fd00::/8", Family::V6),
            ("2001:db8::1/128", Family::V6),
            ("::ffff:10.0.0.1", Family::V6),
        ] {
            assert_eq!(cidr_family(cidr), Ok(family), "{cidr}");
        }
        for cidr in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "",
            "1.2.3.4 -j X",
            "[fd00::1]",
        ] {
            assert!(cidr_family(cidr).is_err(), "{cidr}");
        }
    }
}
