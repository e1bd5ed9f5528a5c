//! The nftables ruleset in the agent's network namespace: default-drop egress that accepts
//! loopback (aac's resolver listens there), established and related traffic, the agent's own
//! network (never the host behind its gateway), and destination addresses in the allow sets;
//! everything else is logged to the resolver (NFLOG) and rejected at once, TCP with a reset,
//! the rest with ICMP administratively prohibited.
//!
//! The script is applied with `nft -f -` from a thread inside the namespace, as one
//! transaction. It is idempotent: a new monitor re-applies it on adoption, which replaces the
//! rules but keeps the sets and the addresses already in them.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::EgressError;
use crate::network::netns;

/// The table aac owns in the agent's namespace.
pub const TABLE: &str = "aac_egress";
/// NFLOG group the reject rules log to (groups are per network namespace).
pub const LOG_GROUP: u16 = 7;

/// The allow sets: addresses answered for allowed names (any port), and address . protocol .
/// port triples for entries with a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllowSet {
    V4,
    V6,
    V4Port,
    V6Port,
}

impl AllowSet {
    pub fn name(self) -> &'static str {
        match self {
            AllowSet::V4 => "allow4",
            AllowSet::V6 => "allow6",
            AllowSet::V4Port => "allow4p",
            AllowSet::V6Port => "allow6p",
        }
    }

    pub fn for_addr(ip: IpAddr, with_port: bool) -> AllowSet {
        match (ip, with_port) {
            (IpAddr::V4(_), false) => AllowSet::V4,
            (IpAddr::V6(_), false) => AllowSet::V6,
            (IpAddr::V4(_), true) => AllowSet::V4Port,
            (IpAddr::V6(_), true) => AllowSet::V6Port,
        }
    }
}

/// What the ruleset depends on besides the sets.
#[derive(Debug, Clone, Default)]
pub struct RulesetParams {
    /// The agent's own networks: reachable (other agents on it).
    pub own_networks: Vec<IpNet>,
    /// Addresses inside those networks that are the host (the bridge's gateway): refused, as
    /// anything the host listens on there would be a way out.
    pub host_addresses: Vec<IpAddr>,
}

fn family_match(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// The `nft -f` script.
pub fn ruleset(p: &RulesetParams) -> String {
    let t = TABLE;
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("add table inet {t}"));
    line(format!(
        "add set inet {t} allow4 {{ type ipv4_addr; flags timeout; }}"
    ));
    line(format!(
        "add set inet {t} allow6 {{ type ipv6_addr; flags timeout; }}"
    ));
    line(format!(
        "add set inet {t} allow4p {{ type ipv4_addr . inet_proto . inet_service; flags timeout; }}"
    ));
    line(format!(
        "add set inet {t} allow6p {{ type ipv6_addr . inet_proto . inet_service; flags timeout; }}"
    ));
    line(format!(
        "add chain inet {t} output {{ type filter hook output priority 0; policy drop; }}"
    ));
    line(format!("add chain inet {t} deny"));
    line(format!("flush chain inet {t} output"));
    line(format!("flush chain inet {t} deny"));
    let out = |r: &str| format!("add rule inet {t} output {r}");
    line(out("oifname \"lo\" accept"));
    line(out("ct state established,related accept"));
    // The kernel's own chatter on the agent's link: IPv6 neighbour discovery, link-local
    // multicast (MLD, IGMP reports). Never link-local unicast: that would reach the host.
    line(out(
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
    ));
    line(out("ip6 daddr ff02::/16 accept"));
    line(out("ip daddr 224.0.0.0/24 accept"));
    // DNS goes to aac's resolver (on loopback) only, DNS over TLS nowhere.
    line(out(
        "meta l4proto { tcp, udp } th dport { 53, 853 } jump deny",
    ));
    for h in &p.host_addresses {
        line(out(&format!("{} daddr {h} jump deny", family_match(*h))));
    }
    for n in &p.own_networks {
        line(out(&format!(
            "{} daddr {n} accept",
            family_match(n.network())
        )));
    }
    line(out("ip daddr @allow4 accept"));
    line(out("ip6 daddr @allow6 accept"));
    line(out("ip daddr . meta l4proto . th dport @allow4p accept"));
    line(out("ip6 daddr . meta l4proto . th dport @allow6p accept"));
    line(out("jump deny"));
    let deny = |r: &str| format!("add rule inet {t} deny {r}");
    line(deny(&format!(
        "limit rate 100/second burst 200 packets log group {LOG_GROUP}"
    )));
    line(deny("meta l4proto tcp counter reject with tcp reset"));
    line(deny("counter reject with icmpx admin-prohibited"));
    s
}

/// Run `nft -f -` with `script` inside the namespace at `netns_path`.
pub fn apply(netns_path: &Path, script: &str) -> Result<(), EgressError> {
    let out = netns::run_in(netns_path, || -> std::io::Result<std::process::Output> {
        // The child starts in this thread's namespace.
        let mut child = Command::new(nft_binary())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        child.wait_with_output()
    })?
    .map_err(|e| EgressError::Nft(format!("running {}: {e}", nft_binary())))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let first = msg
            .lines()
            .find(|l| l.contains("Error"))
            .or_else(|| msg.lines().next())
            .unwrap_or("failed")
            .trim()
            .to_string();
        return Err(EgressError::Nft(format!(
            "applying the egress rules: {first}"
        )));
    }
    Ok(())
}

/// The `nft` binary: `$AAC_NFT`, else `nft` on the PATH (Debian: /usr/sbin/nft).
pub fn nft_binary() -> String {
    std::env::var("AAC_NFT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("nft")
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_order_and_contents() {
        let s = ruleset(&RulesetParams {
            own_networks: vec!["10.88.0.0/24".parse().unwrap()],
            host_addresses: vec!["10.88.0.1".parse().unwrap()],
        });
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in\n{s}"))
        };
        // Loopback and established first, the host's gateway refused before the subnet is
        // accepted, the sets after, the reject last.
        assert!(pos("oifname \"lo\" accept") < pos("ct state established,related accept"));
        assert!(pos("th dport { 53, 853 } jump deny") < pos("ip daddr 10.88.0.0/24 accept"));
        assert!(pos("ip daddr 10.88.0.1 jump deny") < pos("ip daddr 10.88.0.0/24 accept"));
        assert!(pos("ip daddr 10.88.0.0/24 accept") < pos("ip daddr @allow4 accept"));
        assert!(pos("@allow6p accept") < pos("output jump deny"));
        assert!(pos("log group 7") < pos("reject with tcp reset"));
        assert!(s.contains("policy drop"));
        // Idempotent: sets are added (kept), chains flushed and refilled.
        assert!(s.contains("add set inet aac_egress allow4 {"));
        assert!(!s.contains("delete"));
    }
}
