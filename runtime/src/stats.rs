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

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cgroups::counters::read_opt;
pub use crate::cgroups::{cgroup_pids, CgroupLayout, CgroupMode, Sample};

/// Reading counters fails as reading the cgroup does.
pub use crate::cgroups::CgroupError as StatsError;

// ---------------------------------------------------------------------------------------------
// Sampling

pub use crate::cgroups::counters::net_dev;

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
    use crate::cgroups::counters::{parse_blkio_v1, parse_io_stat, parse_net_dev, sample_in};
    use std::path::Path;
    use std::time::SystemTime;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:4 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn all_dirs_names_every_hierarchy_of_a_hybrid_host() {
        let l = CgroupLayout::from_mountinfo(HYBRID);
        let dirs: Vec<String> = l
            .all_dirs("/aac/x")
            .unwrap()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu,cpuacct/aac/x",
                "/sys/fs/cgroup/memory/aac/x",
                "/sys/fs/cgroup/pids/aac/x",
                "/sys/fs/cgroup/systemd/aac/x",
                "/sys/fs/cgroup/unified/aac/x",
            ]
        );
        assert!(l.all_dirs("/aac/../x").is_err());
    }

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
        // The plan maps the systemd form once; the layout takes the directory.
        let scope = crate::cgroups::driver::cgroup_fs_path("system.slice:aac:x").unwrap();
        assert_eq!(
            l.controller_dir("memory", &scope).unwrap().unwrap(),
            (PathBuf::from(format!("/sys/fs/cgroup{scope}")), true)
        );
        if nix::unistd::geteuid().is_root() {
            assert_eq!(scope, "/system.slice/aac-x.scope");
        }
        assert_eq!(
            crate::cgroups::driver::cgroup_fs_path("system.slice:aac:../x"),
            None
        );
        assert!(matches!(
            l.controller_dir("memory", "/system.slice/../x"),
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
