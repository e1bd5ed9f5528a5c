//! The egress policy of an agent: `spec.network.security` (`allowExternalConnections`,
//! `allowedHosts`) or `aac run --deny-egress` / `--allow-host`, as one model.
//!
//! - `allowExternalConnections: true` and no `allowedHosts`: no policy, egress is open.
//! - `allowExternalConnections: false` and no `allowedHosts`: nothing beyond the agent's own
//!   network (other agents on it, by name, stay reachable).
//! - a non-empty `allowedHosts`: egress only to those hosts. An entry is an exact name
//!   (`api.example.com`), a wildcard (`*.example.com`: any depth of subdomain, never the apex
//!   itself) or an address (`192.0.2.7`, `[2001:db8::7]`), each with an optional `:port`.
//!   The list is enforced even when `allowExternalConnections` was left at (or set to) true;
//!   writing `true` next to a list is a validation warning.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::model::NetworkSecurity;

/// What part of the name space one `allowedHosts` entry admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostMatch {
    /// One name, lower case, without a trailing dot.
    Exact(String),
    /// Every name below this suffix (`*.example.com` stores `example.com`), never the suffix.
    Subdomains(String),
    /// A literal address: no name is looked up for it.
    Address(IpAddr),
}

/// One `allowedHosts` entry: a name pattern or an address, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPattern {
    pub host: HostMatch,
    /// `None`: every port.
    pub port: Option<u16>,
}

/// Whether `s` is a DNS host name: labels of letters, digits and `-` (not at either end), at
/// most 63 characters each, 253 in all.
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A name as the policy compares it: lower case, no trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

impl HostPattern {
    /// Parse `NAME[:PORT]`, `*.SUFFIX[:PORT]`, `IPV4[:PORT]`, `IPV6` or `[IPV6][:PORT]`.
    pub fn parse(entry: &str) -> Result<HostPattern, String> {
        let s = entry.trim();
        if s.is_empty() {
            return Err("is empty (a host name like api.example.com)".into());
        }
        if s.chars().any(char::is_whitespace) {
            return Err(format!("{entry:?} is not a host name (it contains spaces)"));
        }
        let bad_port =
            |e: String| format!("{entry:?}: {e}; write NAME:PORT, like api.example.com:443");
        // `[v6]` or `[v6]:port`
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{entry:?}: missing `]` after the IPv6 address"))?;
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{entry:?}: {addr:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(p.strip_prefix(':').unwrap_or(p)).map_err(bad_port)?),
            };
            return Ok(HostPattern {
                host: HostMatch::Address(ip),
                port,
            });
        }
        // A bare IPv6 address has colons of its own and no port.
        if let Ok(ip @ IpAddr::V6(_)) = s.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: HostMatch::Address(ip),
                port: None,
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p).map_err(bad_port)?)),
            None => (s, None),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: HostMatch::Address(ip),
                port,
            });
        }
        let name = normalize_name(host);
        if name == "*" {
            return Err(format!(
                "{entry:?} would allow every host; leave allowedHosts empty and set allowExternalConnections: true instead"
            ));
        }
        let (pattern, bare) = match name.strip_prefix("*.") {
            Some(suffix) => (HostMatch::Subdomains(suffix.to_string()), suffix),
            None => (HostMatch::Exact(name.clone()), name.as_str()),
        };
        if bare.contains('*') {
            return Err(format!(
                "{entry:?}: only a leading `*.` wildcard is supported (like *.example.com)"
            ));
        }
        if !is_host_name(bare) {
            return Err(format!(
                "{entry:?} is not a host name (letters, digits, '-' and dots, like api.example.com)"
            ));
        }
        Ok(HostPattern {
            host: pattern,
            port,
        })
    }

    /// Whether this entry admits the (normalized) name `name`.
    pub fn matches(&self, name: &str) -> bool {
        match &self.host {
            HostMatch::Exact(n) => n == name,
            HostMatch::Subdomains(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            HostMatch::Address(_) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (HostMatch::Exact(n), p) => {
                f.write_str(n)?;
                if let Some(p) = p {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            (HostMatch::Subdomains(s), p) => {
                write!(f, "*.{s}")?;
                if let Some(p) = p {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            (HostMatch::Address(IpAddr::V6(ip)), Some(p)) => write!(f, "[{ip}]:{p}"),
            (HostMatch::Address(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (HostMatch::Address(ip), None) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which ports a name may be reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowance {
    AnyPort,
    Ports(BTreeSet<u16>),
}

/// The policy in force: egress only to `allowed` (nothing beyond the agent's own network
/// when it is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPolicy {
    pub allowed: Vec<HostPattern>,
}

impl EgressPolicy {
    /// The policy `security` asks for; `None` when egress is open. Entries that do not parse
    /// are left out (validation reports them).
    pub fn of(security: &NetworkSecurity) -> Option<EgressPolicy> {
        if security.allow_external_connections && security.allowed_hosts.is_empty() {
            return None;
        }
        let mut allowed: Vec<HostPattern> = Vec::new();
        for p in security
            .allowed_hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
        {
            if !allowed.contains(&p) {
                allowed.push(p);
            }
        }
        Some(EgressPolicy { allowed })
    }

    /// Whether (and on which ports) the name may be reached; `None`: it may not.
    pub fn allows(&self, name: &str) -> Option<Allowance> {
        let name = normalize_name(name);
        let mut ports = BTreeSet::new();
        let mut any = false;
        for p in self.allowed.iter().filter(|p| p.matches(&name)) {
            match p.port {
                None => any = true,
                Some(port) => {
                    ports.insert(port);
                }
            }
        }
        if any {
            Some(Allowance::AnyPort)
        } else if ports.is_empty() {
            None
        } else {
            Some(Allowance::Ports(ports))
        }
    }

    /// The literal addresses of the list, with their port (`None`: any).
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, Option<u16>)> + '_ {
        self.allowed.iter().filter_map(|p| match p.host {
            HostMatch::Address(ip) => Some((ip, p.port)),
            _ => None,
        })
    }
}

impl NetworkSecurity {
    /// The egress policy in force; `None` when egress is open.
    pub fn egress_policy(&self) -> Option<EgressPolicy> {
        EgressPolicy::of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn entries_parse_and_print() {
        for (input, shown) in [
            ("api.openai.com", "api.openai.com"),
            ("API.OpenAI.com.", "api.openai.com"),
            ("api.openai.com:443", "api.openai.com:443"),
            ("*.example.com", "*.example.com"),
            ("*.Example.com:8443", "*.example.com:8443"),
            ("192.0.2.7", "192.0.2.7"),
            ("192.0.2.7:80", "192.0.2.7:80"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "[2001:db8::7]:443"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(p(input).to_string(), shown, "{input}");
        }
        assert_eq!(
            p("*.example.com").host,
            HostMatch::Subdomains("example.com".into())
        );
    }

    #[test]
    fn bad_entries_say_why() {
        for (input, why) in [
            ("", "is empty"),
            ("a b", "contains spaces"),
            ("api.example.com:0", "is not a port"),
            ("api.example.com:https", "is not a port"),
            ("api.example.com:70000", "is not a port"),
            ("*", "would allow every host"),
            ("api.*.com", "only a leading `*.` wildcard"),
            ("**.example.com", "only a leading `*.` wildcard"),
            ("exa_mple.com", "is not a host name"),
            ("-bad.com", "is not a host name"),
            ("a..b", "is not a host name"),
            ("[2001:db8::1", "missing `]`"),
            ("[nope]:80", "is not an IPv6 address"),
            ("http://example.com", "is not"),
        ] {
            let e = HostPattern::parse(input).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_never_the_apex() {
        let w = p("*.example.com");
        assert!(w.matches("api.example.com"));
        assert!(w.matches("a.b.c.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(!w.matches("example.com.evil.net"));
        let e = p("example.com");
        assert!(e.matches("example.com"));
        assert!(!e.matches("api.example.com"));
    }

    #[test]
    fn policy_in_force() {
        let sec = |allow, hosts: &[&str]| NetworkSecurity {
            allow_external_connections: allow,
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(EgressPolicy::of(&sec(true, &[])), None);
        assert_eq!(
            EgressPolicy::of(&sec(false, &[])),
            Some(EgressPolicy { allowed: vec![] })
        );
        // A list is enforced even next to `true` (validation warns about it).
        let pol = EgressPolicy::of(&sec(true, &["a.test:443", "a.test:80", "*.b.test"])).unwrap();
        assert_eq!(
            pol.allows("A.test."),
            Some(Allowance::Ports([80, 443].into_iter().collect()))
        );
        assert_eq!(pol.allows("x.b.test"), Some(Allowance::AnyPort));
        assert_eq!(pol.allows("b.test"), None);
        assert_eq!(pol.allows("c.test"), None);
        let pol = EgressPolicy::of(&sec(false, &["a.test:443", "a.test", "10.0.0.1:22"])).unwrap();
        assert_eq!(pol.allows("a.test"), Some(Allowance::AnyPort));
        assert_eq!(
            pol.addresses().collect::<Vec<_>>(),
            vec![("10.0.0.1".parse().unwrap(), Some(22))]
        );
        assert_eq!(
            serde_json::to_value(&pol).unwrap(),
            serde_json::json!({"allowed": ["a.test:443", "a.test", "10.0.0.1:22"]})
        );
    }
}
