//! Resource usage of a running container, read straight from its cgroup (`aac stats`,
//! `aac top`), and the ways to print it: docker's table, JSON and Prometheus text.
//!
//! Every container lives in the cgroup `/aac/<id>` (see [`crate::spec::builder::CGROUP_PARENT`]),
//! whichever backend runs it. [`CgroupLayout`] finds where that cgroup is on this host:
//!
//! * **legacy (v1)**: one mount per controller (`/sys/fs/cgroup/memory/aac/<id>`, ...);
//! * **unified (v2)**: one tree (`/sys/fs/cgroup/aac/<id>`);
//! * **hybrid**: v1 controllers plus an (often controller-less) cgroup2 mount at
//!   `/sys/fs/cgroup/unified`.
//!
//! Each figure is read from the v1 controller when that controller is mounted as v1, else from
//! the unified tree, so the three layouts share one code path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("no cgroup {0} on this host (is the container running?)")]
    NoCgroup(String),
    #[error("cgroup path {0:?} must be absolute and must not contain '..'")]
    BadPath(String),
    #[error("no cgroup filesystem is mounted (read /proc/self/mountinfo)")]
    NoCgroupFs,
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StatsError {
    let path = path.to_path_buf();
    move |source| StatsError::Io { op, path, source }
}

// ---------------------------------------------------------------------------------------------
// Layout detection

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (systemd's "hybrid" setup).
    Hybrid,
    /// Only cgroup2.
    Unified,
}

/// One v1 hierarchy: its controllers, where it is mounted and which cgroup the mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V1Mount {
    controllers: Vec<String>,
    mount_point: PathBuf,
    root: String,
}

/// Where the cgroup filesystems are mounted, as `/proc/self/mountinfo` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    v1: Vec<V1Mount>,
    /// The cgroup2 mount point and the cgroup it shows.
    unified: Option<(PathBuf, String)>,
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupLayout {
    /// Read `/proc/self/mountinfo`.
    pub fn detect() -> Result<CgroupLayout, StatsError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(io_err("reading", path))?;
        let layout = CgroupLayout::from_mountinfo(&text);
        if layout.v1.is_empty() && layout.unified.is_none() {
            return Err(StatsError::NoCgroupFs);
        }
        Ok(layout)
    }

    /// Parse the text of a `mountinfo` file. Lines that are not cgroup mounts are ignored.
    pub fn from_mountinfo(text: &str) -> CgroupLayout {
        let mut layout = CgroupLayout {
            v1: Vec::new(),
            unified: None,
        };
        for line in text.lines() {
            // id parent maj:min root mount-point options [optional...] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                continue;
            }
            let root = unescape_mountinfo(left[3]);
            let mount_point = PathBuf::from(unescape_mountinfo(left[4]));
            match right[0] {
                "cgroup2" if layout.unified.is_none() => {
                    layout.unified = Some((mount_point, root));
                }
                "cgroup" => {
                    let controllers: Vec<String> = right[2]
                        .split(',')
                        .filter(|o| {
                            !matches!(
                                *o,
                                "rw" | "ro"
                                    | "noprefix"
                                    | "xattr"
                                    | "cpuset_v2_mode"
                                    | "clone_children"
                            ) && !o.starts_with("release_agent=")
                        })
                        .map(str::to_string)
                        .collect();
                    // The same hierarchy can be mounted twice; the first mount wins.
                    if !layout.v1.iter().any(|m| m.controllers == controllers) {
                        layout.v1.push(V1Mount {
                            controllers,
                            mount_point,
                            root,
                        });
                    }
                }
                _ => {}
            }
        }
        layout
    }

    pub fn mode(&self) -> CgroupMode {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (true, _) => CgroupMode::Unified,
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::Legacy,
        }
    }

    /// The v1 mount of `controller` (`memory`, `cpuacct`, `pids`, `blkio`, `name=systemd`).
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1_hierarchy(controller)
            .map(|m| m.mount_point.as_path())
    }

    fn v1_hierarchy(&self, controller: &str) -> Option<&V1Mount> {
        self.v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
    }

    /// The controllers of the v1 hierarchies (named ones such as `name=systemd` left out).
    pub fn v1_controllers(&self) -> Vec<String> {
        self.v1
            .iter()
            .flat_map(|m| m.controllers.iter())
            .filter(|c| !c.starts_with("name="))
            .cloned()
            .collect()
    }

    /// The cgroup2 mount point, if any.
    pub fn unified_mount(&self) -> Option<&Path> {
        self.unified.as_ref().map(|(p, _)| p.as_path())
    }

    /// Directory of `cgroup_path` (`/aac/<id>`) under the v1 `controller`.
    pub fn v1_dir(
        &self,
        controller: &str,
        cgroup_path: &str,
    ) -> Result<Option<PathBuf>, StatsError> {
        let rel = relative(cgroup_path)?;
        Ok(self
            .v1_hierarchy(controller)
            .map(|m| join_under(&m.mount_point, &m.root, &rel)))
    }

    /// Directory of `cgroup_path` in the unified tree.
    pub fn unified_dir(&self, cgroup_path: &str) -> Result<Option<PathBuf>, StatsError> {
        let rel = relative(cgroup_path)?;
        Ok(self
            .unified
            .as_ref()
            .map(|(mp, root)| join_under(mp, root, &rel)))
    }

    /// Where to read `controller`'s files for `cgroup_path`: its v1 directory when the
    /// controller is mounted as v1, else the unified directory. The flag tells which.
    pub fn controller_dir(
        &self,
        controller: &str,
        cgroup_path: &str,
    ) -> Result<Option<(PathBuf, bool)>, StatsError> {
        if let Some(d) = self.v1_dir(controller, cgroup_path)? {
            return Ok(Some((d, false)));
        }
        Ok(self.unified_dir(cgroup_path)?.map(|d| (d, true)))
    }
}

/// `cgroup_path` without its leading `/`, refusing `..` so that input cannot leave the tree.
/// runc's systemd form (`system.slice:aac:<id>`) is first mapped to the scope's directory.
fn relative(cgroup_path: &str) -> Result<String, StatsError> {
    let mapped = crate::host::cgroup_fs_path(cgroup_path)
        .ok_or_else(|| StatsError::BadPath(cgroup_path.to_string()))?;
    let cgroup_path = mapped.as_str();
    if !cgroup_path.starts_with('/') || cgroup_path.split('/').any(|c| c == "..") {
        return Err(StatsError::BadPath(cgroup_path.to_string()));
    }
    Ok(cgroup_path.trim_matches('/').to_string())
}

/// The directory of cgroup `rel` under a mount that shows cgroup `root` (not `/` inside
/// some containers, where the mount shows only a subtree).
fn join_under(mount_point: &Path, root: &str, rel: &str) -> PathBuf {
    let root = root.trim_matches('/');
    let inner = if root.is_empty() {
        rel
    } else {
        match rel.strip_prefix(root) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
            _ => rel,
        }
    };
    if inner.is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling

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
fn read_opt(path: &Path) -> Result<Option<String>, StatsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, StatsError> {
    text.trim().parse().map_err(|_| StatsError::Parse {
        path: path.to_path_buf(),
        content: text.chars().take(80).collect(),
    })
}

/// A single-number file; 0 when missing.
fn read_u64(path: &Path) -> Result<u64, StatsError> {
    match read_opt(path)? {
        Some(t) => parse_u64(path, &t),
        None => Ok(0),
    }
}

/// `key value` lines (memory.stat, cpu.stat) as a map.
fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>, StatsError> {
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

/// Take a reading of the container in cgroup `cgroup_path` (`/aac/<id>`); `pid` is one of its
/// processes, used for network counters (its network namespace's `/proc/<pid>/net/dev`).
pub fn sample(cgroup_path: &str, pid: Option<u32>) -> Result<Sample, StatsError> {
    sample_in(&CgroupLayout::detect()?, cgroup_path, pid)
}

/// [`sample`] with a layout detected beforehand (to sample many containers).
pub fn sample_in(
    layout: &CgroupLayout,
    cgroup_path: &str,
    pid: Option<u32>,
) -> Result<Sample, StatsError> {
    let timestamp = SystemTime::now();
    let mut found = false;
    let mut dir_of = |controller: &str| -> Result<Option<(PathBuf, bool)>, StatsError> {
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
        return Err(StatsError::NoCgroup(cgroup_path.to_string()));
    }

    let (net_rx_bytes, net_tx_bytes) = match pid {
        Some(pid) => net_dev(pid)?,
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
fn parse_blkio_v1(text: &str) -> (u64, u64) {
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
fn parse_io_stat(text: &str) -> (u64, u64) {
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

/// Received and transmitted bytes of every interface but `lo` in `pid`'s network namespace.
pub fn net_dev(pid: u32) -> Result<(u64, u64), StatsError> {
    let path = PathBuf::from(format!("/proc/{pid}/net/dev"));
    let text = fs::read_to_string(&path).map_err(io_err("reading", &path))?;
    Ok(parse_net_dev(&text))
}

fn parse_net_dev(text: &str) -> (u64, u64) {
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

/// CPU use between two samples in percent of one CPU (`200.0` = two CPUs busy), the figure
/// `docker stats` shows.
///
/// docker computes `cpu_delta / system_delta * online_cpus * 100`, where `system_delta` is the
/// growth of the host's total CPU time (all CPUs, from `/proc/stat`) between the readings. Over
/// an interval that total grows by `wall_delta * online_cpus`, so docker's figure is
/// `cpu_delta / wall_delta * 100`, which is what this computes from the two timestamps. The
/// result is clamped to `[0, online_cpus * 100]`; 0 when the samples are not in order.
pub fn cpu_percent(prev: &Sample, cur: &Sample, online_cpus: u32) -> f64 {
    let Ok(wall) = cur.timestamp.duration_since(prev.timestamp) else {
        return 0.0;
    };
    let wall_ns = wall.as_nanos() as f64;
    if wall_ns <= 0.0 || cur.cpu_usage_ns < prev.cpu_usage_ns {
        return 0.0;
    }
    let cpu_delta = (cur.cpu_usage_ns - prev.cpu_usage_ns) as f64;
    let pct = cpu_delta / wall_ns * 100.0;
    pct.clamp(0.0, f64::from(online_cpus.max(1)) * 100.0)
}

/// CPUs online on the host (docker's `OnlineCPUs`), not limited by affinity or quota.
pub fn online_cpus() -> u32 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => u32::try_from(n).unwrap_or(1),
        _ => 1,
    }
}

/// The host's memory (`MemTotal`), which docker shows as the limit of an unlimited container.
pub fn host_memory() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// Go's `%.{precision}g` applied to `v` (docker formats sizes with it).
fn format_g(v: f64, precision: usize) -> String {
    let p = precision.max(1);
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    // Exponent after rounding to p significant digits.
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.abs());
    }
    let decimals = (p as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn scaled(size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut size = size;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

const BINARY_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// Memory size as docker prints it: binary units, 4 significant digits (`12.5MiB`, `1GiB`).
pub fn human_binary(bytes: u64) -> String {
    let (v, unit) = scaled(bytes as f64, 1024.0, &BINARY_UNITS);
    format!("{}{unit}", format_g(v, 4))
}

/// I/O size as docker prints it: decimal units, 3 significant digits (`1.23kB`, `0B`).
pub fn human_decimal(bytes: u64) -> String {
    let (v, unit) = scaled(bytes as f64, 1000.0, &DECIMAL_UNITS);
    format!("{}{unit}", format_g(v, 3))
}

/// One line of `aac stats`, with docker's columns and texts; serializes to the JSON
/// `docker stats --format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "CPUPerc")]
    pub cpu_perc: String,
    #[serde(rename = "MemUsage")]
    pub mem_usage: String,
    #[serde(rename = "MemPerc")]
    pub mem_perc: String,
    #[serde(rename = "NetIO")]
    pub net_io: String,
    #[serde(rename = "BlockIO")]
    pub block_io: String,
    #[serde(rename = "PIDs")]
    pub pids: String,
}

impl StatsRow {
    /// `cpu_percent` is `None` for the first reading (docker prints `--` until it has two).
    /// An unlimited container's limit shows as `host_memory`.
    pub fn new(
        id: &str,
        name: &str,
        sample: &Sample,
        cpu_percent: Option<f64>,
        host_memory: Option<u64>,
    ) -> StatsRow {
        let limit = sample.mem_limit.or(host_memory);
        let mem_perc = match limit {
            Some(l) if l > 0 => format!("{:.2}%", sample.mem_usage as f64 / l as f64 * 100.0),
            _ => "--".to_string(),
        };
        StatsRow {
            id: id.chars().take(12).collect(),
            name: name.to_string(),
            cpu_perc: cpu_percent.map_or_else(|| "--".to_string(), |c| format!("{c:.2}%")),
            mem_usage: format!(
                "{} / {}",
                human_binary(sample.mem_usage),
                limit.map_or_else(|| "--".to_string(), human_binary)
            ),
            mem_perc,
            net_io: format!(
                "{} / {}",
                human_decimal(sample.net_rx_bytes),
                human_decimal(sample.net_tx_bytes)
            ),
            block_io: format!(
                "{} / {}",
                human_decimal(sample.blk_read_bytes),
                human_decimal(sample.blk_write_bytes)
            ),
            pids: sample.pids.to_string(),
        }
    }

    fn cells(&self) -> [&str; 8] {
        [
            &self.id,
            &self.name,
            &self.cpu_perc,
            &self.mem_usage,
            &self.mem_perc,
            &self.net_io,
            &self.block_io,
            &self.pids,
        ]
    }
}

/// Column headers of [`format_stats_table`].
pub const STATS_HEADER: [&str; 8] = [
    "CONTAINER ID",
    "NAME",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET I/O",
    "BLOCK I/O",
    "PIDS",
];

/// Align cells the way docker's tabwriter does (min width 10, padding 3).
pub fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate().take(cols) {
            if i + 1 == cols {
                s.push_str(c);
            } else {
                let w = (widths[i] + 3).max(10);
                let _ = write!(s, "{c:<w$}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `aac stats` as a table with docker's columns.
pub fn format_stats_table(rows: &[StatsRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.cells().iter().map(|c| c.to_string()).collect())
        .collect();
    format_table(&STATS_HEADER, &cells)
}

/// A container to expose: its name, ID and reading.
#[derive(Debug, Clone, Copy)]
pub struct Labeled<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub sample: &'a Sample,
}

/// Escape a label value for the Prometheus text format: `\`, `"` and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The readings in the Prometheus text exposition format (version 0.0.4): one `# HELP` and
/// `# TYPE` per metric, then one sample per container labelled `name` and `id`. An unlimited
/// container has no `aac_container_memory_limit_bytes` sample.
pub fn prometheus_text(containers: &[Labeled<'_>]) -> String {
    type Getter = fn(&Sample) -> Option<f64>;
    let metrics: [(&str, &str, &str, Getter); 8] = [
        (
            "aac_container_cpu_usage_seconds_total",
            "counter",
            "CPU time used by the container's processes.",
            |s| Some(s.cpu_usage_ns as f64 / 1e9),
        ),
        (
            "aac_container_memory_usage_bytes",
            "gauge",
            "Memory in use, not counting inactive page cache.",
            |s| Some(s.mem_usage as f64),
        ),
        (
            "aac_container_memory_limit_bytes",
            "gauge",
            "Memory limit (absent when unlimited).",
            |s| s.mem_limit.map(|l| l as f64),
        ),
        (
            "aac_container_pids",
            "gauge",
            "Processes and threads in the container.",
            |s| Some(s.pids as f64),
        ),
        (
            "aac_container_network_receive_bytes_total",
            "counter",
            "Bytes received on the container's interfaces (lo excluded).",
            |s| Some(s.net_rx_bytes as f64),
        ),
        (
            "aac_container_network_transmit_bytes_total",
            "counter",
            "Bytes sent on the container's interfaces (lo excluded).",
            |s| Some(s.net_tx_bytes as f64),
        ),
        (
            "aac_container_blkio_read_bytes_total",
            "counter",
            "Bytes read from block devices.",
            |s| Some(s.blk_read_bytes as f64),
        ),
        (
            "aac_container_blkio_write_bytes_total",
            "counter",
            "Bytes written to block devices.",
            |s| Some(s.blk_write_bytes as f64),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for c in containers {
            if let Some(v) = get(c.sample) {
                let _ = writeln!(
                    out,
                    "{name}{{name=\"{}\",id=\"{}\"}} {v}",
                    escape_label_value(c.name),
                    escape_label_value(c.id)
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// top

/// One process of a container, with `ps -ef`'s columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRow {
    pub pid: u32,
    pub ppid: u32,
    /// Effective user ID.
    pub uid: u32,
    /// Its name on the host, or the number when it has none.
    pub user: String,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: String,
    /// CPU time used, `[DD-]HH:MM:SS` like ps.
    pub time: String,
    /// Command line, or `[comm]` for a process without one (kernel threads, zombies).
    pub cmd: String,
}

/// Column headers of [`format_top_table`].
pub const TOP_HEADER: [&str; 6] = ["UID", "PID", "PPID", "STAT", "TIME", "CMD"];

/// `aac top` as a table.
pub fn format_top_table(rows: &[ProcessRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.user.clone(),
                r.pid.to_string(),
                r.ppid.to_string(),
                r.state.clone(),
                r.time.clone(),
                r.cmd.clone(),
            ]
        })
        .collect();
    format_table(&TOP_HEADER, &cells)
}

/// The processes of the container in `cgroup_path`, by PID.
pub fn top(cgroup_path: &str) -> Result<Vec<ProcessRow>, StatsError> {
    top_in(&CgroupLayout::detect()?, cgroup_path)
}

/// PIDs in `cgroup_path`: from the v1 `pids` (else `memory`, else any v1) hierarchy, or from the
/// unified tree.
pub fn cgroup_pids(layout: &CgroupLayout, cgroup_path: &str) -> Result<Vec<u32>, StatsError> {
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
    Err(StatsError::NoCgroup(cgroup_path.to_string()))
}

/// [`top`] with a layout detected beforehand.
pub fn top_in(layout: &CgroupLayout, cgroup_path: &str) -> Result<Vec<ProcessRow>, StatsError> {
    let ticks = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    };
    let mut rows = Vec::new();
    for pid in cgroup_pids(layout, cgroup_path)? {
        // A process can exit between listing and reading: skip it.
        match process_row(pid, ticks) {
            Ok(Some(r)) => rows.push(r),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rows)
}

fn process_row(pid: u32, ticks: u64) -> Result<Option<ProcessRow>, StatsError> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat_path = base.join("stat");
    let Some(stat) = read_opt(&stat_path)? else {
        return Ok(None);
    };
    let bad = || StatsError::Parse {
        path: stat_path.clone(),
        content: stat.chars().take(80).collect(),
    };
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split at the last ')'.
    let open = stat.find('(').ok_or_else(bad)?;
    let close = stat.rfind(')').ok_or_else(bad)?;
    let comm = stat.get(open + 1..close).ok_or_else(bad)?.to_string();
    let rest: Vec<&str> = stat
        .get(close + 1..)
        .ok_or_else(bad)?
        .split_whitespace()
        .collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    if rest.len() < 13 {
        return Err(bad());
    }
    let state = rest[0].to_string();
    let ppid: u32 = rest[1].parse().map_err(|_| bad())?;
    let utime: u64 = rest[11].parse().map_err(|_| bad())?;
    let stime: u64 = rest[12].parse().map_err(|_| bad())?;

    let uid = read_opt(&base.join("status"))?
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0);
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);

    let cmdline = fs::read(base.join("cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cmd = if args.is_empty() {
        format!("[{comm}]")
    } else {
        args.join(" ")
    };
    Ok(Some(ProcessRow {
        pid,
        ppid,
        uid,
        user,
        state,
        time: format_cpu_time(utime.saturating_add(stime) / ticks),
        cmd,
    }))
}

/// Seconds as ps prints CPU time: `HH:MM:SS`, with `D-` in front past a day.
pub fn format_cpu_time(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:4 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn detects_hybrid_and_resolves_dirs() {
        let l = CgroupLayout::from_mountinfo(HYBRID);
        assert_eq!(l.mode(), CgroupMode::Hybrid);
        assert_eq!(
            l.v1_dir("cpuacct", "/aac/x").unwrap().unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/aac/x")
        );
        assert_eq!(
            l.v1_mount("name=systemd").unwrap(),
            Path::new("/sys/fs/cgroup/systemd")
        );
        // blkio is not mounted as v1: falls back to the unified tree
        assert_eq!(
            l.controller_dir("blkio", "/aac/x").unwrap().unwrap(),
            (PathBuf::from("/sys/fs/cgroup/unified/aac/x"), true)
        );
        assert!(matches!(
            l.v1_dir("memory", "/aac/../etc"),
            Err(StatsError::BadPath(_))
        ));
        assert!(matches!(
            l.v1_dir("memory", "aac/x"),
            Err(StatsError::BadPath(_))
        ));
    }

    #[test]
    fn detects_unified_and_legacy_and_subtree_mounts() {
        let v2 = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = CgroupLayout::from_mountinfo(v2);
        assert_eq!(l.mode(), CgroupMode::Unified);
        assert_eq!(
            l.controller_dir("memory", "/aac/x").unwrap().unwrap(),
            (PathBuf::from("/sys/fs/cgroup/aac/x"), true)
        );
        let legacy = "35 31 0:32 /aac /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n";
        let l = CgroupLayout::from_mountinfo(legacy);
        assert_eq!(l.mode(), CgroupMode::Legacy);
        assert_eq!(
            l.v1_dir("memory", "/aac/x").unwrap().unwrap(),
            Path::new("/sys/fs/cgroup/my memory/x")
        );
        assert!(l.unified_dir("/aac/x").unwrap().is_none());
        assert_eq!(
            CgroupLayout::from_mountinfo("garbage\n\n- -").mode(),
            CgroupMode::Unified
        );
    }

    #[test]
    fn systemd_cgroups_paths_resolve_to_their_scope() {
        let v2 = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = CgroupLayout::from_mountinfo(v2);
        let scope = crate::host::cgroup_fs_path("system.slice:aac:x").unwrap();
        assert_eq!(
            l.controller_dir("memory", "system.slice:aac:x")
                .unwrap()
                .unwrap(),
            (PathBuf::from(format!("/sys/fs/cgroup{scope}")), true)
        );
        if nix::unistd::geteuid().is_root() {
            assert_eq!(scope, "/system.slice/aac-x.scope");
        }
        assert!(matches!(
            l.controller_dir("memory", "system.slice:aac:../x"),
            Err(StatsError::BadPath(_))
        ));
        let l = CgroupLayout::from_mountinfo(HYBRID);
        assert_eq!(l.v1_controllers(), vec!["cpu", "cpuacct", "memory", "pids"]);
    }

    /// A cgroup2 tree laid out on disk the way the kernel shows it (the host these tests run on
    /// may be v1-only, so the v2 reading is checked against the kernel's file formats).
    #[test]
    fn reads_a_v2_tree() {
        let root = std::env::temp_dir().join(format!("aac-v2-{}", crate::state::new_id()));
        let dir = root.join("aac/x");
        fs::create_dir_all(&dir).unwrap();
        let files = [
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            ),
            ("memory.current", "52428800\n"),
            (
                "memory.stat",
                "anon 40000000\nfile 12000000\nactive_file 1000\ninactive_file 10485760\n",
            ),
            ("memory.max", "max\n"),
            ("pids.current", "7\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
        ];
        for (name, body) in files {
            fs::write(dir.join(name), body).unwrap();
        }
        let mountinfo = format!(
            "25 1 0:22 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
            root.display()
        );
        let layout = CgroupLayout::from_mountinfo(&mountinfo);
        let s = sample_in(&layout, "/aac/x", None).unwrap();
        assert_eq!(s.cpu_usage_ns, 2_500_000_000);
        assert_eq!(s.mem_usage, 52_428_800 - 10_485_760);
        assert_eq!(s.mem_limit, None);
        assert_eq!(s.pids, 7);
        assert_eq!((s.blk_read_bytes, s.blk_write_bytes), (4096, 8192));
        fs::write(dir.join("memory.max"), "67108864\n").unwrap();
        let s = sample_in(&layout, "/aac/x", None).unwrap();
        assert_eq!(s.mem_limit, Some(64 << 20));
        fs::write(dir.join("memory.max"), "lots\n").unwrap();
        assert!(matches!(
            sample_in(&layout, "/aac/x", None),
            Err(StatsError::Parse { .. })
        ));
        fs::write(dir.join("cgroup.procs"), "12\n3\n").unwrap();
        assert_eq!(cgroup_pids(&layout, "/aac/x").unwrap(), [3, 12]);
        assert!(matches!(
            sample_in(&layout, "/aac/y", None),
            Err(StatsError::NoCgroup(_))
        ));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn parses_counters() {
        assert_eq!(
            parse_blkio_v1(
                "8:0 Read 4096\n8:0 Write 100\n8:16 Read 4\n8:0 Total 4200\nTotal 4200\n"
            ),
            (4100, 100)
        );
        assert_eq!(
            parse_io_stat("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n259:0 rbytes=1 wbytes=2\n"),
            (11, 22)
        );
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 5000      10    0    0    0     0          0         0     5000      10    0    0    0     0       0          0
  eth0: 1200      3    0    0    0     0          0         0      340       2    0    0    0     0       0          0
  eth1:10 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev(dev), (1210, 345));
    }

    #[test]
    fn docker_sizes() {
        assert_eq!(human_binary(0), "0B");
        assert_eq!(human_binary(1023), "1023B");
        assert_eq!(human_binary(1024), "1KiB");
        assert_eq!(human_binary(13_107_200), "12.5MiB");
        assert_eq!(human_binary(64 << 20), "64MiB");
        assert_eq!(human_binary(1_234_567_890), "1.15GiB");
        assert_eq!(human_decimal(0), "0B");
        assert_eq!(human_decimal(1234), "1.23kB");
        assert_eq!(human_decimal(1200), "1.2kB");
        assert_eq!(human_decimal(999_600), "1e+03kB"); // Go's %.3g, as docker prints it
        assert_eq!(human_decimal(5_000_000), "5MB");
        assert_eq!(format_g(0.000012345, 3), "1.23e-05");
        assert_eq!(format_cpu_time(59), "00:00:59");
        assert_eq!(format_cpu_time(90061), "1-01:01:01");
    }

    fn sample_at(secs: u64, cpu_ns: u64) -> Sample {
        Sample {
            timestamp: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            cpu_usage_ns: cpu_ns,
            mem_usage: 13_107_200,
            mem_limit: Some(64 << 20),
            pids: 3,
            net_rx_bytes: 1234,
            net_tx_bytes: 0,
            blk_read_bytes: 5_000_000,
            blk_write_bytes: 1200,
        }
    }

    #[test]
    fn cpu_percent_like_docker() {
        let a = sample_at(100, 0);
        let b = sample_at(102, 1_000_000_000);
        assert!((cpu_percent(&a, &b, 4) - 50.0).abs() < 1e-9);
        let c = sample_at(104, 9_000_000_000);
        assert!((cpu_percent(&b, &c, 4) - 400.0).abs() < 1e-9);
        assert_eq!(cpu_percent(&b, &c, 2), 200.0); // clamped
        assert_eq!(cpu_percent(&b, &a, 4), 0.0); // out of order
        assert!(online_cpus() >= 1);
    }

    #[test]
    fn table_json_and_row() {
        let s = sample_at(1, 0);
        let row = StatsRow::new(&"ab".repeat(32), "web", &s, Some(12.345), None);
        assert_eq!(row.id, "abababababab");
        assert_eq!(row.cpu_perc, "12.35%");
        assert_eq!(row.mem_usage, "12.5MiB / 64MiB");
        assert_eq!(row.mem_perc, "19.53%");
        assert_eq!(row.net_io, "1.23kB / 0B");
        assert_eq!(row.block_io, "5MB / 1.2kB");
        let table = format_stats_table(std::slice::from_ref(&row));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("CONTAINER ID   NAME      CPU %"),
            "{table}"
        );
        assert_eq!(lines[1].find("web"), lines[0].find("NAME"));
        assert!(lines[1].ends_with("   3"));
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["MemUsage"], "12.5MiB / 64MiB");
        assert_eq!(json["PIDs"], "3");
        let sj = serde_json::to_string(&s).unwrap();
        assert!(sj.contains("\"timestamp\":\"1970-01-01T00:00:01"), "{sj}");
        let back: Sample = serde_json::from_str(&sj).unwrap();
        assert_eq!(back, s);
        let unlimited = Sample {
            mem_limit: None,
            ..s
        };
        let row = StatsRow::new("x", "y", &unlimited, None, Some(2 << 30));
        assert_eq!(row.mem_usage, "12.5MiB / 2GiB");
        assert_eq!(row.cpu_perc, "--");
    }

    #[test]
    fn prometheus_escapes_and_skips_unlimited() {
        let s = sample_at(1, 1_500_000_000);
        let u = Sample {
            mem_limit: None,
            ..s.clone()
        };
        let text = prometheus_text(&[
            Labeled {
                name: "we\"ird\\na\nme",
                id: "abc",
                sample: &s,
            },
            Labeled {
                name: "plain",
                id: "def",
                sample: &u,
            },
        ]);
        assert!(text.contains(
            "aac_container_cpu_usage_seconds_total{name=\"we\\\"ird\\\\na\\nme\",id=\"abc\"} 1.5\n"
        ));
        assert_eq!(text.matches("aac_container_memory_limit_bytes{").count(), 1);
        assert_eq!(text.matches("# TYPE").count(), 8);
    }
}
