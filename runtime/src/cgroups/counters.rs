//! Reading a container's counters from its cgroup: CPU time, memory, pids, block I/O.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{CgroupError, CgroupLayout};
use crate::io::io_err;

/// One reading of a container's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When it was taken (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// CPU time used by every process of the container, ever (ns).
    pub cpu_usage_ns: u64,
    /// Memory in use minus inactive page cache (what docker shows).
    pub mem_usage: u64,
    /// Memory limit; `None` when unlimited.
    pub mem_limit: Option<u64>,
    /// Processes and threads.
    pub pids: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub blk_read_bytes: u64,
    pub blk_write_bytes: u64,
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::logs::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).map_err(serde::de::Error::custom)
    }
}

/// v1 reports "no limit" as the largest page-aligned signed 64-bit value; anything this large
/// is not a real limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// Read a file when it exists: `Ok(None)` for a missing file.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e).into()),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.chars().take(80).collect(),
    })
}

/// A single-number file; 0 when missing.
fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    match read_opt(path)? {
        Some(t) => parse_u64(path, &t),
        None => Ok(0),
    }
}

/// `key value` lines (memory.stat, cpu.stat) as a map.
fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    let Some(text) = read_opt(path)? else {
        return Ok(BTreeMap::new());
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

/// Take a reading of the container in cgroup `cgroup_path` (its directory relative to each
/// hierarchy's root, [`super::CgroupPlan::fs_path`]); `pid` is one of its
/// processes, used for network counters (its network namespace's `/proc/<pid>/net/dev`).
pub fn sample(cgroup_path: &str, pid: Option<u32>) -> Result<Sample, CgroupError> {
    sample_in(&CgroupLayout::detect()?, cgroup_path, pid)
}

/// [`sample`] with a layout detected beforehand (to sample many containers).
pub fn sample_in(
    layout: &CgroupLayout,
    cgroup_path: &str,
    pid: Option<u32>,
) -> Result<Sample, CgroupError> {
    let timestamp = SystemTime::now();
    let mut found = false;
    let mut dir_of = |controller: &str| -> Result<Option<(PathBuf, bool)>, CgroupError> {
        Ok(layout
            .controller_dir(controller, cgroup_path)?
            .filter(|(d, _)| d.is_dir())
            .inspect(|_| found = true))
    };

    let cpu_usage_ns = match dir_of("cpuacct")? {
        Some((d, false)) => read_u64(&d.join("cpuacct.usage"))?,
        Some((d, true)) => read_flat_keyed(&d.join("cpu.stat"))?
            .get("usage_usec")
            .map_or(0, |us| us.saturating_mul(1000)),
        None => 0,
    };

    let (mem_usage, mem_limit) = match dir_of("memory")? {
        Some((d, false)) => {
            let usage = read_u64(&d.join("memory.usage_in_bytes"))?;
            let stat = read_flat_keyed(&d.join("memory.stat"))?;
            let inactive = stat.get("total_inactive_file").copied().unwrap_or(0);
            let limit = read_u64(&d.join("memory.limit_in_bytes"))?;
            (
                usage.saturating_sub(inactive),
                (limit > 0 && limit < V1_UNLIMITED).then_some(limit),
            )
        }
        Some((d, true)) => {
            let current = read_u64(&d.join("memory.current"))?;
            let stat = read_flat_keyed(&d.join("memory.stat"))?;
            let inactive = stat.get("inactive_file").copied().unwrap_or(0);
            let max_path = d.join("memory.max");
            let limit = match read_opt(&max_path)? {
                Some(t) if t.trim() != "max" => Some(parse_u64(&max_path, &t)?),
                _ => None,
            };
            (current.saturating_sub(inactive), limit)
        }
        None => (0, None),
    };

    let pids = match dir_of("pids")? {
        Some((d, _)) => read_u64(&d.join("pids.current"))?,
        None => 0,
    };

    let (blk_read_bytes, blk_write_bytes) = match dir_of("blkio")? {
        Some((d, false)) => {
            let recursive = d.join("blkio.throttle.io_service_bytes_recursive");
            let text = match read_opt(&recursive)? {
                Some(t) => Some(t),
                None => read_opt(&d.join("blkio.throttle.io_service_bytes"))?,
            };
            parse_blkio_v1(text.as_deref().unwrap_or(""))
        }
        Some((d, true)) => parse_io_stat(read_opt(&d.join("io.stat"))?.as_deref().unwrap_or("")),
        None => (0, 0),
    };

    if !found {
        return Err(CgroupError::NoCgroup(cgroup_path.to_string()));
    }

    let (net_rx_bytes, net_tx_bytes) = match pid {
        Some(pid) => net_dev(pid).unwrap_or_default(),
        None => (0, 0),
    };

    Ok(Sample {
        timestamp,
        cpu_usage_ns,
        mem_usage,
        mem_limit,
        pids,
        net_rx_bytes,
        net_tx_bytes,
        blk_read_bytes,
        blk_write_bytes,
    })
}

/// v1 `blkio.throttle.io_service_bytes`: `8:0 Read 4096` lines; sums Read and Write over devices.
pub(crate) fn parse_blkio_v1(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [_dev, op, v] = f.as_slice() {
            let v: u64 = v.parse().unwrap_or(0);
            match *op {
                "Read" => r = r.saturating_add(v),
                "Write" => w = w.saturating_add(v),
                _ => {}
            }
        }
    }
    (r, w)
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 ...` lines; sums over devices.
pub(crate) fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for kv in text.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => r = r.saturating_add(v),
                "wbytes" => w = w.saturating_add(v),
                _ => {}
            }
        }
    }
    (r, w)
}

/// PIDs in `cgroup_path`: from the v1 `pids` (else `memory`, else any v1) hierarchy, or from the
/// unified tree.
pub fn cgroup_pids(layout: &CgroupLayout, cgroup_path: &str) -> Result<Vec<u32>, CgroupError> {
    let mut candidates = Vec::new();
    for c in ["pids", "memory", "cpuacct", "name=systemd"] {
        if let Some(d) = layout.v1_dir(c, cgroup_path)? {
            candidates.push(d);
        }
    }
    if let Some(d) = layout.unified_dir(cgroup_path)? {
        candidates.push(d);
    }
    for dir in candidates {
        let procs = dir.join("cgroup.procs");
        if let Some(text) = read_opt(&procs)? {
            let mut pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            pids.sort_unstable();
            return Ok(pids);
        }
    }
    Err(CgroupError::NoCgroup(cgroup_path.to_string()))
}

/// Received and transmitted bytes of every interface but `lo` in `pid`'s network namespace.
pub fn net_dev(pid: u32) -> Result<(u64, u64), CgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    let text = fs::read_to_string(&path).map_err(io_err("reading", &path))?;
    Ok(parse_net_dev(&text))
}

pub(crate) fn parse_net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    // Two header lines, then `  eth0: rx_bytes rx_packets ... (8 rx fields) tx_bytes ...`.
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}
