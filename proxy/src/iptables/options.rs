//! What `weft-proxy iptables` is asked to do ([`InterceptOptions`]), checked
//! before any rule is touched, and the address families the rules come in.

use super::error::IptablesError;
use std::net::IpAddr;

/// Options of `weft-proxy iptables`: which traffic is intercepted and where it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptOptions {
    /// Port of the outbound listener that receives the app's redirected connections.
    pub outbound_port: u16,
    /// Port of the inbound listener that receives redirected connections for the app.
    pub inbound_port: u16,
    /// Port of the probe listener: the kubelet reaches it directly, never redirected.
    pub probe_port: u16,
    /// Traffic from this uid (the proxy's) is not redirected, so the proxy does not loop.
    pub proxy_uid: u32,
    /// Traffic from this gid is not redirected either, when set.
    pub proxy_gid: Option<u32>,
    /// Inbound destination ports left alone (e.g. 15000 admin, 22).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs (or bare addresses) left alone, IPv4 or IPv6: each goes to
    /// its own family's table.
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
            probe_port: 15020,
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
        let port_lists: [(&'static str, &[u16]); 5] = [
            ("--outbound-port", &[self.outbound_port]),
            ("--inbound-port", &[self.inbound_port]),
            ("--probe-port", &[self.probe_port]),
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
        if self.intercept_inbound && self.probe_port == self.inbound_port {
            let reason = format!("must differ from --inbound-port ({})", self.inbound_port);
            return Err(invalid("--probe-port", reason));
        }
        for cidr in &self.exclude_outbound_cidrs {
            cidr_family(cidr).map_err(|r| invalid("--exclude-outbound-cidrs", r))?;
        }
        Ok(())
    }
}

fn invalid(option: &'static str, reason: String) -> IptablesError {
    IptablesError::InvalidOption(option, reason)
}

/// Which table family a rule set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`
    V4,
    /// `ip6tables`
    V6,
}

impl Family {
    /// Loopback destinations, never redirected (the app's own local traffic).
    pub(super) fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    pub(super) fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The family of a CIDR (`addr` or `addr/len`), or why it is none.
pub(super) fn cidr_family(cidr: &str) -> Result<Family, String> {
    let cidr = cidr.trim();
    let (addr, prefix) = match cidr.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (cidr, None),
    };
    let family = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Family::V4,
        Ok(IpAddr::V6(_)) => Family::V6,
        Err(_) => {
            return Err(format!(
                "{cidr:?} is not a CIDR (expected a.b.c.d/len or an IPv6 address/len)"
            ))
        }
    };
    match prefix.map(str::parse::<u8>) {
        None => Ok(family),
        Some(Ok(len)) if len <= family.max_prefix() => Ok(family),
        Some(_) => Err(format!(
            "{cidr:?} is not a CIDR (an {} prefix length is 0-{})",
            family.label(),
            family.max_prefix()
        )),
    }
}
