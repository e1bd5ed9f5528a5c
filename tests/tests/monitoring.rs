//! `aac stats`, `aac top` and `aac events` end to end on real containers of a private
//! containerd: figures are checked against what the containers do.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, free_port, text};
use aac_tests::IMAGE;
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// `aac stats --no-stream --format json NAME`: the container's line.
fn stats_json(name: &str) -> Value {
    let out = aac().ok(&["stats", "--no-stream", "--format", "json", name]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line per container expected:\n{out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["Name"], name, "{v}");
    v
}

fn sample_u64(v: &Value, key: &str) -> u64 {
    v["Sample"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("Sample.{key} missing in {v}"))
}

fn rm(names: &[&str]) {
    let mut args = vec!["rm", "-f"];
    args.extend_from_slice(names);
    let _ = aac().run(&args);
}

#[test]
fn cpu_percent_follows_the_quota() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "burner",
        "--cpus",
        "0.5",
        IMAGE,
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    // The machine may be busy: take a few readings; the quota caps every one of them, and an
    // unloaded reading lands near 50%.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let v = stats_json("burner");
        let cpu = v["CPUPercent"].as_f64().unwrap_or_else(|| panic!("{v}"));
        assert!(
            v["CPUPerc"].as_str().unwrap().ends_with('%'),
            "CPUPerc: {v}"
        );
        assert!(cpu <= 65.0, "CPU {cpu}% above the 0.5 CPU quota: {v}");
        seen.push(cpu);
        if cpu >= 30.0 {
            break;
        }
    }
    assert!(
        seen.iter().any(|c| *c >= 30.0),
        "CPU never near the quota: {seen:?}"
    );
    // The table shows the same container with docker's columns.
    let table = a.ok(&["stats", "--no-stream", "burner"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{col} missing: {table}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains("burner"), "{table}");
    assert!(lines.next().is_none(), "{table}");
    rm(&["burner"]);
}

#[test]
fn memory_usage_rises_toward_the_limit() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "eater",
        "--memory",
        "64m",
        IMAGE,
        "sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; \
         dd if=/dev/zero bs=1M count=40 2>/dev/null | cat > /dev/shm/x; touch /tmp/done; sleep 300",
    ]);
    let before = stats_json("eater");
    let limit = sample_u64(&before, "memLimit");
    assert_eq!(limit, 64 << 20, "{before}");
    assert!(
        before["MemUsage"].as_str().unwrap().ends_with("/ 64MiB"),
        "{before}"
    );
    let used_before = sample_u64(&before, "memUsage");
    assert!(used_before < 20 << 20, "idle shell uses {used_before}");

    a.ok(&["exec", "eater", "touch", "/tmp/go"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a
        .run(&["exec", "eater", "test", "-e", "/tmp/done"])
        .status
        .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "dd did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = stats_json("eater");
    let used_after = sample_u64(&after, "memUsage");
    assert!(
        used_after >= used_before + (35 << 20),
        "40 MiB in tmpfs should count: before {used_before}, after {used_after}"
    );
    assert!(used_after <= limit, "{after}");
    let perc: f64 = after["MemPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(perc > 55.0 && perc <= 100.0, "{after}");
    rm(&["eater"]);
}

/// GET `path` from 127.0.0.1:`port` and return the number of body bytes.
fn fetch(port: u16, path: &str) -> std::io::Result<usize> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut b = Vec::new();
    s.read_to_end(&mut b)?;
    let head_end = b
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(b.len(), |p| p + 4);
    Ok(b.len() - head_end)
}

#[test]
fn network_bytes_grow_with_traffic() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let publish = format!("{port}:8080");
    a.ok(&[
        "run",
        "-d",
        "--name",
        "netweb",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && dd if=/dev/urandom of=/www/big bs=1024 count=1024 2>/dev/null && \
         echo ok > /www/ready && exec httpd -f -p 8080 -h /www",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch(port, "/ready").map_or(true, |n| n == 0) {
        assert!(Instant::now() < deadline, "httpd never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = stats_json("netweb");
    let got = fetch(port, "/big").unwrap();
    assert_eq!(got, 1 << 20);
    let after = stats_json("netweb");
    let (tx0, tx1) = (
        sample_u64(&before, "netTxBytes"),
        sample_u64(&after, "netTxBytes"),
    );
    let (rx0, rx1) = (
        sample_u64(&before, "netRxBytes"),
        sample_u64(&after, "netRxBytes"),
    );
    assert!(tx1 >= tx0 + (1 << 20), "tx {tx0} -> {tx1}");
    assert!(rx1 > rx0, "rx {rx0} -> {rx1}");
    assert_ne!(after["NetIO"], before["NetIO"]);
    rm(&["netweb"]);
}

/// `prometheus_client` is importable, installed from PyPI when missing.
fn prometheus_client() -> bool {
    let has = || {
        std::process::Command::new("python3")
            .args(["-c", "import prometheus_client"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if has() {
        return true;
    }
    let _ = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "-q", "prometheus_client"])
        .status();
    has()
}

#[test]
fn prometheus_output_passes_the_reference_parser() {
    if !root() {
        return;
    }
    assert!(prometheus_client(), "python3 with prometheus_client needed");
    let a = aac();
    a.ok(&[
        "run", "-d", "--name", "prom.one", "--memory", "32m", IMAGE, "sleep", "300",
    ]);
    a.ok(&["run", "-d", "--name", "prom-two", IMAGE, "sleep", "300"]);
    let out = a.ok(&["stats", "--no-stream", "--format", "prometheus"]);
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
fams = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    fams[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(fams))
"#;
    let mut py = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    let res = py.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "parser refused:\n{}\n{out}",
        text(&res.stderr)
    );
    let fams: Value = serde_json::from_slice(&res.stdout).unwrap();
    // The parser drops `_total` from counter family names.
    let cpu = &fams["aac_container_cpu_usage_seconds"];
    assert_eq!(cpu["type"], "counter", "{fams}");
    let names: Vec<&str> = cpu["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"prom.one"), "{names:?}");
    assert!(names.contains(&"prom-two"), "{names:?}");
    let limits = fams["aac_container_memory_limit_bytes"]["samples"]
        .as_array()
        .unwrap();
    let one = limits
        .iter()
        .find(|s| s[1]["name"] == "prom.one")
        .unwrap_or_else(|| panic!("{limits:?}"));
    assert_eq!(one[2].as_f64(), Some((32 << 20) as f64));
    assert_eq!(fams["aac_container_pids"]["type"], "gauge");
    rm(&["prom.one", "prom-two"]);
}

#[test]
fn top_lists_the_processes() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "topper",
        IMAGE,
        "sh",
        "-c",
        "sleep 301 & exec sleep 302",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = a.ok(&["top", "topper", "-ef"]);
        if out.contains("sleep 301") && out.contains("sleep 302") {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.starts_with("UID"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let rows: Value = serde_json::from_str(&a.ok(&["top", "--format", "json", "topper"])).unwrap();
    let inner = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cmd"] == "sleep 301")
        .unwrap();
    let main = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cmd"] == "sleep 302")
        .unwrap();
    assert_eq!(inner["ppid"], main["pid"]);
    rm(&["topper"]);
    let out = a.run(&["top", "topper"]);
    assert_eq!(out.status.code(), Some(125));
}

fn events_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--format", "json"];
    all.extend_from_slice(args);
    aac()
        .ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn events_from_the_journal() {
    if !root() {
        return;
    }
    let a = aac();
    let out = a.run(&["run", "--name", "ev-short", IMAGE, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    a.ok(&["run", "--name", "ev-other", IMAGE, "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let evs = loop {
        let evs = events_json(&["--since", "1m", "--until", "0s"]);
        let died = |n: &str| evs.iter().any(|e| e["type"] == "die" && e["name"] == n);
        if died("ev-short") && died("ev-other") {
            break evs;
        }
        assert!(Instant::now() < deadline, "no die events: {evs:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let of = |name: &str, kind: &str| {
        evs.iter()
            .find(|e| e["name"] == name && e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} of {name} in {evs:?}"))
            .clone()
    };
    of("ev-short", "create");
    let start = of("ev-short", "start");
    let die = of("ev-short", "die");
    assert_eq!(die["attributes"]["exitCode"], "7", "{die}");
    assert_eq!(of("ev-other", "die")["attributes"]["exitCode"], "0");
    assert!(start["time"].as_str() <= die["time"].as_str());
    assert_eq!(start["id"], die["id"]);

    let only = events_json(&[
        "--since",
        "1m",
        "--until",
        "0s",
        "--filter",
        "name=ev-short",
    ]);
    assert!(only.len() >= 3, "{only:?}");
    assert!(only.iter().all(|e| e["name"] == "ev-short"), "{only:?}");
    let dies = events_json(&["--since", "1m", "--until", "0s", "--filter", "type=die"]);
    assert!(dies.iter().all(|e| e["type"] == "die"), "{dies:?}");
    assert!(dies.len() >= 2, "{dies:?}");
    let none = events_json(&["--since", "1m", "--until", "0s", "--filter", "name=nobody"]);
    assert!(none.is_empty(), "{none:?}");
    // The text form names type, ID and attributes.
    let txt = a.ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "--filter",
        "name=ev-short",
        "--filter",
        "type=die",
    ]);
    assert!(
        txt.contains("container die") && txt.contains("exitCode=7, name=ev-short"),
        "{txt}"
    );
    let bad = a.run(&["events", "--filter", "colour=red"]);
    assert_eq!(bad.status.code(), Some(125));

    a.ok(&["rm", "ev-short"]);
    let rms = events_json(&["--since", "1m", "--until", "0s", "--filter", "type=rm"]);
    assert!(rms.iter().any(|e| e["name"] == "ev-short"), "{rms:?}");
    rm(&["ev-other"]);
}

#[test]
fn events_follow_new_containers() {
    if !root() {
        return;
    }
    let a = aac();
    let mut child = a
        .command(&["events", "--format", "json", "--filter", "type=start"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    // `aac events` follows from the moment it opened the journal: start containers until one
    // of their starts comes through (the first may come before it is ready).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut names = Vec::new();
    let seen = 'outer: loop {
        assert!(
            Instant::now() < deadline,
            "no start event seen for {names:?}"
        );
        let name = format!("follow-{}", names.len());
        a.ok(&["run", "-d", "--name", &name, IMAGE, "sleep", "300"]);
        names.push(name.clone());
        let until = Instant::now() + Duration::from_secs(5);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(v) => {
                    assert_eq!(v["type"], "start", "the filter let through {v}");
                    if v["name"] == name.as_str() {
                        break 'outer v;
                    }
                }
                Err(_) => break,
            }
        }
    };
    assert_eq!(seen["id"].as_str().unwrap().len(), 64, "{seen}");
    let _ = child.kill();
    let _ = child.wait();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    rm(&refs);
}

#[test]
fn stats_of_an_unknown_container_fails() {
    if !root() {
        return;
    }
    let out = aac().run(&["stats", "--no-stream", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no-such-thing"),
        "{}",
        text(&out.stderr)
    );
    let help = aac().ok(&["stats", "--help"]);
    assert!(help.contains("page cache"), "{help}");
}

#[test]
fn stats_streams_a_table_per_second_when_piped() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&["run", "-d", "--name", "streamed", IMAGE, "sleep", "300"]);
    let mut child = a
        .command(&["stats", "streamed"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("CONTAINER ID"))
        .count()
        < 3
    {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("three tables expected: {lines:?}"));
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("three tables expected: {lines:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // No terminal: plain tables, no escape sequences; every table holds the container.
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");
    let rows: Vec<&String> = lines.iter().filter(|l| l.contains("streamed")).collect();
    assert!(rows.len() >= 2, "{lines:?}");
    assert!(
        rows.iter().all(|r| r.ends_with(" 1")),
        "one process: {rows:?}"
    );
    rm(&["streamed"]);
}
