//! Monitoring against real cgroups and real processes: `stats::sample`, `cpu_percent`, `top`,
//! the Prometheus text (checked with the reference Python parser) and the event journal.
//!
//! The cgroup tests need root; without it they print why and pass.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aac_runtime::events::{self, Event, EventFilter, EventFollower, EventType};
use aac_runtime::state::{new_id, StateDirs};
use aac_runtime::stats::{self, CgroupLayout, Labeled, StatsError};
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::{Cgroup, MaxValue};
use cgroups_rs::CgroupPid;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: real cgroups need root");
    false
}

/// A cgroup `/aac/test-<random>` with docker-like limits, removed (with its processes) on drop.
struct TestCgroup {
    cg: Cgroup,
    path: String,
    children: Vec<Child>,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let name = format!("aac/test-{}", &new_id()[..12]);
        let mut builder = CgroupBuilder::new(&name)
            .memory()
            .memory_hard_limit(64 << 20)
            .done()
            .cpu()
            .quota(50_000)
            .period(100_000)
            .done()
            .pid()
            .maximum_number_of_processes(MaxValue::Value(20))
            .done();
        let hier = cgroups_rs::fs::hierarchies::auto();
        if !hier.v2() {
            builder = builder.set_specified_controllers(
                ["cpu", "cpuacct", "memory", "pids", "blkio"]
                    .map(String::from)
                    .to_vec(),
            );
        }
        let cg = builder.build(hier).unwrap();
        TestCgroup {
            cg,
            path: format!("/{name}"),
            children: Vec::new(),
        }
    }

    /// Run `sh -c script` inside the cgroup: the shell waits on stdin until it has been moved
    /// in, so everything the script does is accounted to the cgroup.
    fn spawn(&mut self, script: &str) -> u32 {
        let mut child = Command::new("/bin/sh")
            .args(["-c", &format!("read _go; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        self.children.push(child);
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything else still inside (grandchildren).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.cg.procs();
            if procs.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..20 {
            if self.cg.delete().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove cgroup {}", self.path);
    }
}

#[test]
fn cpu_burner_is_held_to_half_a_cpu_and_top_lists_it() {
    if !is_root() {
        return;
    }
    let mut cg = TestCgroup::new();
    let pid = cg.spawn("while :; do :; done");
    std::thread::sleep(Duration::from_millis(300));
    let layout = CgroupLayout::detect().unwrap();
    let a = aac_runtime::cgroups::sample_in(&layout, &cg.path, Some(pid)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let b = aac_runtime::cgroups::sample_in(&layout, &cg.path, Some(pid)).unwrap();
    let pct = stats::cpu_percent(&a, &b, stats::online_cpus());
    assert!((30.0..=60.0).contains(&pct), "cpu {pct}% ({a:?} -> {b:?})");
    assert!(b.pids >= 1, "{b:?}");
    assert_eq!(b.mem_limit, Some(64 << 20));

    let rows = stats::top_in(&layout, &cg.path).unwrap();
    let row = rows.iter().find(|r| r.pid == pid).unwrap();
    assert_eq!(row.ppid, std::process::id());
    assert_eq!(row.uid, 0);
    assert_eq!(row.user, "root");
    assert!(row.cmd.contains("while :; do :; done"), "{row:?}");
    assert_eq!(row.state, "R", "{row:?}");
    let table = stats::format_top_table(&rows);
    assert!(table.starts_with("UID"), "{table}");
    assert!(table.contains(&pid.to_string()), "{table}");
    assert_eq!(stats::cgroup_pids(&layout, &cg.path).unwrap(), vec![pid]);
}

#[test]
fn memory_allocator_is_counted_against_the_limit() {
    if !is_root() {
        return;
    }
    let mut cg = TestCgroup::new();
    let pid = cg.spawn("exec python3 -c 'b=bytearray(40*1024*1024)\nimport time\ntime.sleep(5)'");
    let start = Instant::now();
    let before = aac_runtime::cgroups::sample(&cg.path, Some(pid)).unwrap();
    let mut peak = before.clone();
    while start.elapsed() < Duration::from_secs(4) && peak.mem_usage <= 30 << 20 {
        std::thread::sleep(Duration::from_millis(100));
        peak = aac_runtime::cgroups::sample(&cg.path, Some(pid)).unwrap();
    }
    assert!(peak.mem_usage > 30 << 20, "memory {} bytes", peak.mem_usage);
    assert!(
        peak.mem_usage <= 64 << 20,
        "memory {} bytes",
        peak.mem_usage
    );
    assert_eq!(peak.mem_limit, Some(64 << 20));
    assert!(peak.pids >= 1);
    let row = stats::StatsRow::new("0123456789abcdef", "mem", &peak, None, None);
    assert!(row.mem_usage.ends_with(" / 64MiB"), "{row:?}");
    // The python process shows in top with its command line.
    let rows = stats::top(&cg.path).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.pid == pid && r.cmd.contains("python3 -c b=bytearray")),
        "{rows:?}"
    );
}

#[test]
fn a_missing_cgroup_is_an_error_not_zeros() {
    if !is_root() {
        return;
    }
    let err = aac_runtime::cgroups::sample("/aac/does-not-exist-here", None).unwrap_err();
    assert!(matches!(err, StatsError::NoCgroup(_)), "{err}");
    assert!(matches!(
        stats::top("/aac/does-not-exist-here"),
        Err(StatsError::NoCgroup(_))
    ));
    assert!(matches!(
        aac_runtime::cgroups::sample("/aac/../../etc", None),
        Err(StatsError::BadPath(_))
    ));
}

#[test]
fn network_counters_of_a_live_process_do_not_go_back() {
    let pid = std::process::id();
    let (rx1, tx1) = stats::net_dev(pid).unwrap();
    // Some traffic on a real interface if there is one; loopback is not counted either way.
    let _ = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", "192.0.2.1:9"));
    let (rx2, tx2) = stats::net_dev(pid).unwrap();
    assert!(rx2 >= rx1 && tx2 >= tx1, "{rx1},{tx1} -> {rx2},{tx2}");
    assert!(stats::net_dev(u32::MAX).is_err());
}

fn python_with_prometheus_client() -> bool {
    let has = |py: &str| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("python3") {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "prometheus_client"])
        .status();
    has("python3")
}

#[test]
fn prometheus_text_parses_with_the_reference_parser() {
    if !is_root() {
        return;
    }
    assert!(
        python_with_prometheus_client(),
        "python3 with prometheus_client is needed (pip install prometheus_client)"
    );
    let mut cg = TestCgroup::new();
    let pid = cg.spawn("sleep 30");
    let s = aac_runtime::cgroups::sample(&cg.path, Some(pid)).unwrap();
    let unlimited = stats::Sample {
        mem_limit: None,
        cpu_usage_ns: 2_500_000_000,
        ..s.clone()
    };
    let text = stats::prometheus_text(&[
        Labeled {
            name: "odd \"name\" with \\ and\nnewline",
            id: "abc123",
            sample: &s,
        },
        Labeled {
            name: "plain",
            id: "def456",
            sample: &unlimited,
        },
    ]);
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for smp in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": smp.name,
                    "labels": smp.labels, "value": smp.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "parser failed on:\n{text}");
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let value = |metric: &str, id: &str| -> Option<f64> {
        parsed
            .iter()
            .find(|p| p["name"] == metric && p["labels"]["id"] == id)
            .map(|p| p["value"].as_f64().unwrap())
    };
    let odd = "odd \"name\" with \\ and\nnewline";
    assert!(parsed
        .iter()
        .any(|p| p["labels"]["id"] == "abc123" && p["labels"]["name"] == odd));
    assert_eq!(
        value("aac_container_memory_limit_bytes", "abc123"),
        Some((64u64 << 20) as f64)
    );
    assert_eq!(value("aac_container_memory_limit_bytes", "def456"), None);
    assert_eq!(
        value("aac_container_memory_usage_bytes", "abc123"),
        Some(s.mem_usage as f64)
    );
    assert_eq!(value("aac_container_pids", "abc123"), Some(s.pids as f64));
    assert_eq!(
        value("aac_container_cpu_usage_seconds_total", "def456"),
        Some(2.5)
    );
    assert_eq!(
        value("aac_container_blkio_write_bytes_total", "abc123"),
        Some(s.blk_write_bytes as f64)
    );
    assert_eq!(
        value("aac_container_network_receive_bytes_total", "abc123"),
        Some(s.net_rx_bytes as f64)
    );
    let families: std::collections::BTreeSet<(&str, &str)> = parsed
        .iter()
        .map(|p| (p["family"].as_str().unwrap(), p["type"].as_str().unwrap()))
        .collect();
    assert!(
        families.contains(&("aac_container_network_transmit_bytes", "counter")),
        "{families:?}"
    );
    assert!(families.contains(&("aac_container_pids", "gauge")));
}

// ---------------------------------------------------------------------------------------------
// Events (no root needed)

fn temp_dirs() -> (StateDirs, PathBuf) {
    let base = std::env::temp_dir().join(format!("aac-events-test-{}", new_id()));
    (
        StateDirs {
            run: base.join("run"),
            data: base.join("data"),
        },
        base,
    )
}

fn seq(e: &Event) -> u64 {
    e.attributes["seq"].parse().unwrap()
}

/// Assert `got` is exactly `want` without printing thousands of numbers.
fn assert_same(got: &[u64], want: impl IntoIterator<Item = u64>) {
    let want: Vec<u64> = want.into_iter().collect();
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && first_diff.is_none(),
        "got {} events, want {}; first difference at index {first_diff:?} (got {:?}, want {:?})",
        got.len(),
        want.len(),
        first_diff.map(|i| got[i]),
        first_diff.map(|i| want[i]),
    );
}

#[test]
fn events_survive_rotation_with_a_follower_seeing_each_once() {
    let (dirs, base) = temp_dirs();
    let padding = "p".repeat(300);
    events::append(
        &dirs,
        &Event::new(EventType::Create, "c0ffee", "early").with("seq", 0),
    )
    .unwrap();
    let (past, mut follower) =
        EventFollower::read_then_follow(&dirs, None, EventFilter::default()).unwrap();
    assert_eq!(past.len(), 1);
    assert_eq!(past[0].name, "early");
    let mut seen = Vec::new();
    // ~400 bytes per event: 4000 events rotate the 1 MiB journal once.
    for i in 1..=4000u64 {
        let kind = if i % 2 == 0 {
            EventType::Start
        } else {
            EventType::Die
        };
        let e = Event::new(kind, "c0ffee", "web")
            .with("seq", i)
            .with("exitCode", 0)
            .with("pad", &padding);
        events::append(&dirs, &e).unwrap();
        if i % 97 == 0 {
            seen.extend(follower.poll());
        }
    }
    seen.extend(follower.poll());
    assert_same(&seen.iter().map(seq).collect::<Vec<_>>(), 1..=4000);
    assert!(dirs.data.join(events::ROTATED_FILE).exists());
    let cur = std::fs::metadata(dirs.data.join(events::EVENTS_FILE)).unwrap();
    assert!(cur.len() <= events::MAX_SIZE);

    // What is stored: a gap-free run ending at the last event.
    let stored = events::read(&dirs, None, &EventFilter::default()).unwrap();
    let nums: Vec<u64> = stored.iter().map(seq).collect();
    assert_eq!(*nums.last().unwrap(), 4000);
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));

    // Filters.
    let dies = events::read(
        &dirs,
        None,
        &EventFilter {
            types: vec![EventType::Die],
            containers: vec!["c0f".into()],
            until: None,
        },
    )
    .unwrap();
    assert!(!dies.is_empty() && dies.iter().all(|e| e.kind == EventType::Die));
    let none = events::read(
        &dirs,
        Some(SystemTime::now() + Duration::from_secs(60)),
        &EventFilter::default(),
    )
    .unwrap();
    assert!(none.is_empty());
    let by_name = events::read(
        &dirs,
        None,
        &EventFilter {
            containers: vec!["web".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        by_name.len(),
        stored.iter().filter(|e| e.name == "web").count()
    );
    // The journal's lines are docker-like JSON with camelCase attributes.
    let line = std::fs::read_to_string(dirs.data.join(events::EVENTS_FILE)).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(first["type"] == "start" || first["type"] == "die");
    assert_eq!(first["attributes"]["exitCode"], "0");
    assert!("health_status".parse::<EventType>().is_ok());
    assert!("explode".parse::<EventType>().is_err());
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn a_follower_that_sleeps_through_two_rotations_loses_nothing() {
    let (dirs, base) = temp_dirs();
    let padding = "p".repeat(400);
    let ev = |i: u64| {
        Event::new(EventType::HealthStatus, "abc", "x")
            .with("seq", i)
            .with("health", "healthy")
            .with("pad", &padding)
    };
    // Nearly fill the first file, then start following it.
    let mut i = 0u64;
    while std::fs::metadata(dirs.data.join(events::EVENTS_FILE)).map_or(0, |m| m.len()) < 900_000 {
        events::append(&dirs, &ev(i)).unwrap();
        i += 1;
    }
    let mut follower = EventFollower::from_end(&dirs, EventFilter::default()).unwrap();
    let first_followed = i;
    let first_inode = |d: &StateDirs| {
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(d.data.join(events::EVENTS_FILE)).unwrap(),
        )
    };
    let followed_inode = first_inode(&dirs);
    // ~1.8 MB without polling: the followed file is rotated away and deleted, and the file
    // after it is rotated too. Its tail is still readable (open), the next is at events.jsonl.1.
    let end = i + 3500;
    while i < end {
        events::append(&dirs, &ev(i)).unwrap();
        i += 1;
    }
    let rotated_inode = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(dirs.data.join(events::ROTATED_FILE)).unwrap(),
    );
    assert_ne!(rotated_inode, followed_inode, "expected two rotations");
    let seen: Vec<u64> = follower.poll().iter().map(seq).collect();
    assert_same(&seen, first_followed..end);
    assert!(follower.poll().is_empty());
    events::append(&dirs, &ev(end)).unwrap();
    assert_eq!(follower.poll().iter().map(seq).collect::<Vec<_>>(), [end]);
    std::fs::remove_dir_all(base).unwrap();
}

#[test]
fn concurrent_writers_never_tear_or_lose_lines() {
    let (dirs, base) = temp_dirs();
    let mut follower = EventFollower::from_end(&dirs, EventFilter::default()).unwrap();
    let writers = 6u64;
    let each = 1000u64;
    std::thread::scope(|s| {
        for w in 0..writers {
            let dirs = dirs.clone();
            s.spawn(move || {
                for i in 0..each {
                    let e = Event::new(EventType::Kill, &format!("id{w}"), "w")
                        .with("seq", w * each + i)
                        .with("signal", "SIGKILL")
                        .with("pad", "q".repeat(150));
                    events::append(&dirs, &e).unwrap();
                }
            });
        }
    });
    let mut seen: Vec<u64> = follower.poll().iter().map(seq).collect();
    let mut stored: Vec<u64> = events::read(&dirs, None, &EventFilter::default())
        .unwrap()
        .iter()
        .map(seq)
        .collect();
    // Every line parsed (no torn writes), each once.
    seen.sort_unstable();
    stored.sort_unstable();
    assert_same(&stored, 0..writers * each);
    assert_same(&seen, 0..writers * each);
    std::fs::remove_dir_all(base).unwrap();
}
