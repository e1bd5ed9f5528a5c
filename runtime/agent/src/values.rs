//! Parsers for the scalar values shared by agent.yaml and the CLI flags: CPU and memory
//! quantities, durations, restart policies, capability names. Each returns a message meant to
//! follow the field path in a diagnostic (`spec.resources.limits.cpu: ...`).

use std::time::Duration;

use crate::model::{Bytes, MemorySwap, MilliCpu, PortSpec, Protocol, RestartPolicy};

/// CPU as Kubernetes/docker write it: `"2"`, `"0.5"`, `"500m"`. Result in millicores.
pub fn parse_cpu(s: &str) -> Result<MilliCpu, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a CPU amount (use \"2\", \"0.5\" or \"500m\")");
    if t.is_empty() {
        return Err(bad());
    }
    let milli = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        decimal_times(t, 1000).ok_or_else(bad)?
    };
    if milli == 0 {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(MilliCpu(milli))
}

/// Memory as Kubernetes or docker write it: plain bytes, `Ki Mi Gi Ti` (powers of 1024),
/// `K M G T` (powers of 1000, Kubernetes style), and docker's lower-case `b k m g t`
/// suffixes as used by `--memory 512m` (powers of 1024).
pub fn parse_memory(s: &str) -> Result<Bytes, String> {
    let t = s.trim();
    let bad = || {
        format!("{s:?} is not a memory amount (use bytes or a suffix: \"512Mi\", \"2Gi\", \"1G\", \"500M\", \"512m\")")
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match suffix {
        "" | "b" | "B" => 1,
        "Ki" | "kb" | "KB" => 1 << 10,
        "Mi" | "mb" | "MB" => 1 << 20,
        "Gi" | "gb" | "GB" => 1 << 30,
        "Ti" | "tb" | "TB" => 1 << 40,
        "K" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        // docker: `--memory 512m`, `1g`, `64k` are binary units
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = decimal_times(num, mult).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(Bytes(bytes))
}

/// `"1.5"` * 1000 = 1500 without floating point; None on overflow or syntax error, or when
/// the product is not a whole number.
fn decimal_times(num: &str, mult: u64) -> Option<u64> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int_v: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int_v.checked_mul(mult)?;
    // fractional part: frac digits / 10^len * mult, must come out whole
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        if frac.len() > 18 {
            return None;
        }
        let f: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        let part = f * mult as u128;
        if !part.is_multiple_of(scale) {
            return None;
        }
        total = total.checked_add(u64::try_from(part / scale).ok()?)?;
    }
    Some(total)
}

/// Go-style and humantime durations: `"30s"`, `"1m30s"`, `"500ms"`, `"1h"`, `"0s"`, `"0"`.
/// A CPU list in the kernel's format (`0-2,4`), normalised (no spaces): `--cpuset-cpus`.
pub fn parse_cpuset(s: &str) -> Result<String, String> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bad = || format!("{s:?} is not a CPU list (like 0-2,4)");
    if t.is_empty() {
        return Err(bad());
    }
    for part in t.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
            return Err(bad());
        };
        if a > b {
            return Err(bad());
        }
    }
    Ok(t)
}

/// The CPUs of a list [`parse_cpuset`] accepted.
pub fn cpuset_members(list: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
            out.extend(a..=b.min(a.saturating_add(65_536)));
        }
    }
    out
}

/// docker's `--memory-swap`: a memory amount, or `-1` for unlimited swap.
pub fn parse_memory_swap(s: &str) -> Result<MemorySwap, String> {
    if s.trim() == "-1" {
        return Ok(MemorySwap::Unlimited);
    }
    parse_memory(s)
        .map(MemorySwap::Limit)
        .map_err(|e| format!("{e} (or -1 for unlimited swap)"))
}

/// `--cpu-shares`: a relative weight from 2 to 262144 (the kernel's range).
pub fn parse_cpu_shares(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (2..=262_144).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a CPU share count (2 to 262144; 1024 is one CPU's weight)"
        )),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("{s:?} is not a duration (use \"30s\", \"500ms\", \"1m30s\")"))
}

/// `no | on-failure[:N] | always | unless-stopped`.
pub fn parse_restart_policy(s: &str) -> Result<RestartPolicy, String> {
    let t = s.trim();
    match t {
        "no" | "never" => return Ok(RestartPolicy::No),
        "always" => return Ok(RestartPolicy::Always),
        "unless-stopped" => return Ok(RestartPolicy::UnlessStopped),
        "on-failure" => return Ok(RestartPolicy::OnFailure { max_retries: None }),
        _ => {}
    }
    if let Some(n) = t.strip_prefix("on-failure:") {
        return n
            .parse::<u32>()
            .map(|n| RestartPolicy::OnFailure {
                max_retries: Some(n),
            })
            .map_err(|_| format!("{s:?}: the retry count after \"on-failure:\" must be a number"));
    }
    Err(format!(
        "{s:?} is not a restart policy (no, on-failure[:N], always, unless-stopped)"
    ))
}

/// A port number, 1-65535: `70000 is not a port (1-65535)`.
pub fn check_port(n: i128) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{n} is not a port (1-65535)")),
    }
}

/// A port number written as text.
pub fn parse_port(s: &str) -> Result<u16, String> {
    let t = s.trim();
    if t.contains('-') && t.len() > 1 && !t.starts_with('-') {
        return Err(format!("{s:?}: port ranges are not supported"));
    }
    match t.parse::<i128>() {
        Ok(n) => check_port(n),
        Err(_) => Err(format!("{s:?} is not a port number")),
    }
}

/// `tcp` or `udp`, any case.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("{s:?} is not a protocol (tcp or udp)")),
    }
}

/// Docker's `-p` syntax: `containerPort`, `hostPort:containerPort`,
/// `ip:hostPort:containerPort` or `ip::containerPort`, each optionally followed by `/tcp` or
/// `/udp`; IPv6 addresses go in brackets (`[::1]:80:8080`).
pub fn parse_port_mapping(s: &str) -> Result<PortSpec, String> {
    let t = s.trim();
    let (body, protocol) = match t.rsplit_once('/') {
        Some((b, p)) => (b, parse_protocol(p)?),
        None => (t, Protocol::Tcp),
    };
    let (ip, rest): (Option<&str>, Vec<&str>) = if let Some(r) = body.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ']' after the IPv6 address"))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{s:?}: expected \"[ip]:hostPort:containerPort\""))?;
        (Some(ip), after.split(':').collect())
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.as_slice() {
            [ip, host, container] => (Some(*ip), vec![*host, *container]),
            _ => (None, parts),
        }
    };
    let (host, container) = match rest.as_slice() {
        [c] => (None, *c),
        [h, c] => (Some(*h), *c),
        _ => {
            return Err(format!(
                "{s:?} is not a port mapping (use \"8080\", \"80:8080\", \"127.0.0.1:80:8080/udp\")"
            ))
        }
    };
    let host_ip = match ip {
        Some(ip) if !ip.is_empty() => Some(
            ip.parse()
                .map_err(|_| format!("{ip:?} is not an IP address"))?,
        ),
        _ => None,
    };
    let host = match host {
        Some(h) if !h.is_empty() => Some(parse_port(h)?),
        _ => None,
    };
    Ok(PortSpec {
        container: parse_port(container)?,
        host,
        protocol,
        host_ip,
    })
}

/// Linux capabilities known to the kernel versions aac supports (without `CAP_`).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capability set (14 capabilities).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Normalise a capability name (`cap_net_admin`, `NET_ADMIN`, `all`) to `NET_ADMIN` / `ALL`.
pub fn parse_capability(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("CAP_").unwrap_or(&up).to_string();
    if name == "ALL" || ALL_CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        let hint = did_you_mean(&name, ALL_CAPABILITIES.iter().copied())
            .map(|c| format!("; did you mean {c}?"))
            .unwrap_or_default();
        Err(format!("{s:?} is not a Linux capability{hint}"))
    }
}

/// The closest candidate to `word` when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&w, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu("2"), Ok(MilliCpu(2000)));
        assert_eq!(parse_cpu("500m"), Ok(MilliCpu(500)));
        assert_eq!(parse_cpu("0.5"), Ok(MilliCpu(500)));
        assert_eq!(parse_cpu("1.25"), Ok(MilliCpu(1250)));
        assert_eq!(parse_cpu(".5"), Ok(MilliCpu(500)));
        for bad in [
            "",
            "m",
            "-1",
            "abc",
            "1.0001",
            "0",
            "0m",
            "1e3",
            "99999999999999999999",
        ] {
            assert!(parse_cpu(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory("512Mi"), Ok(Bytes(512 << 20)));
        assert_eq!(parse_memory("2Gi"), Ok(Bytes(2 << 30)));
        assert_eq!(parse_memory("1G"), Ok(Bytes(1_000_000_000)));
        assert_eq!(parse_memory("500M"), Ok(Bytes(500_000_000)));
        assert_eq!(parse_memory("512m"), Ok(Bytes(512 << 20)));
        assert_eq!(parse_memory("1048576"), Ok(Bytes(1048576)));
        assert_eq!(parse_memory("1.5Gi"), Ok(Bytes(3 << 29)));
        for bad in ["", "Mi", "12X", "-5", "0", "1.5", "99999999999Ti"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn restart_policies() {
        assert_eq!(parse_restart_policy("no"), Ok(RestartPolicy::No));
        assert_eq!(
            parse_restart_policy("on-failure:3"),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert_eq!(parse_restart_policy("always"), Ok(RestartPolicy::Always));
        assert!(parse_restart_policy("on-failure:x").is_err());
        assert!(parse_restart_policy("sometimes").is_err());
        for p in [
            "no",
            "on-failure",
            "on-failure:5",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(
                parse_restart_policy(p).map(|r| r.to_string()),
                Ok(p.to_string())
            );
        }
    }

    #[test]
    fn capabilities() {
        assert_eq!(parse_capability("cap_net_admin"), Ok("NET_ADMIN".into()));
        assert_eq!(parse_capability("all"), Ok("ALL".into()));
        let e = parse_capability("NET_ADMN").unwrap_err();
        assert!(e.contains("did you mean NET_ADMIN"), "{e}");
        assert_eq!(DEFAULT_CAPABILITIES.len(), 14);
    }
    #[test]
    fn port_mappings() {
        let p = parse_port_mapping("8080:80").unwrap();
        assert_eq!(
            (p.host, p.container, p.protocol),
            (Some(8080), 80, Protocol::Tcp)
        );
        let p = parse_port_mapping("127.0.0.1:80:8080/UDP").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (p.host, p.container, p.protocol),
            (Some(80), 8080, Protocol::Udp)
        );
        let p = parse_port_mapping("[::1]:80:8080").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        let p = parse_port_mapping("127.0.0.1::8080").unwrap();
        assert_eq!((p.host, p.container), (None, 8080));
        let p = parse_port_mapping("9090").unwrap();
        assert_eq!((p.host, p.container), (None, 9090));
        assert_eq!(
            parse_port_mapping("1:70000").unwrap_err(),
            "70000 is not a port (1-65535)"
        );
        for bad in [
            "",
            "a:b",
            "1:2:3:4",
            "80:8080/sctp",
            "x.y:1:2",
            "[::1",
            "8000-8010:80",
            "0",
        ] {
            assert!(parse_port_mapping(bad).is_err(), "{bad:?} accepted");
        }
    }
}
