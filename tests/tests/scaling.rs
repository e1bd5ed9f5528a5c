//! Scaled agents end to end through the `aac` binary on a private containerd: replicas behind
//! one published port (the supervisor's proxy), health taking a replica out of the rotation,
//! scaling under load without a failed request, the autoscaler on a CPU load, live `aac
//! update`, and the process backend's replicas.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, free_port, text, Aac};
use aac_tests::IMAGE;
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// The replicas' program: an httpd answering `/id` with the replica's name and
/// `/cgi-bin/burn` with a CPU-bound loop; healthy while /tmp/healthy exists.
const START: &str = r#"#!/bin/sh
mkdir -p /www/cgi-bin
echo "$AAC_REPLICA" > /www/id
cp /srv/burn /www/cgi-bin/burn
chmod 755 /www/cgi-bin/burn
touch /tmp/healthy
exec httpd -f -p 8080 -h /www
"#;

const BURN: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo
i=0
while [ $i -lt 20000 ]; do i=$((i+1)); done
echo burnt
"#;

const HEALTH: &str =
    "  healthCheck:\n    file:\n      path: /tmp/healthy\n    interval: 1s\n    timeout: 5s\n    retries: 3\n    startPeriod: 1s\n";

/// An agent folder: agent.yaml plus the scripts the replicas mount at /srv.
fn agent_dir(name: &str, port: u16, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::write(srv.join("start.sh"), START).unwrap();
    std::fs::write(srv.join("burn"), BURN).unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  image: {IMAGE}\n  command: [sh, /srv/start.sh]\n  ports:\n    - container: 8080\n      host: {port}\n  volumes:\n    - source: {}\n      target: /srv\n      readOnly: true\n{HEALTH}{extra}",
            srv.display()
        ),
    )
    .unwrap();
    dir
}

/// Removes an agent however the test ends (its supervisor would recreate the replicas the
/// test binary's cleanup removes).
struct Down(&'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = aac().run(&["down", self.0]);
    }
}

fn up(a: &Aac, dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = a.command(&["up", "-d", &dir.to_string_lossy()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "aac up failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `GET path` through 127.0.0.1:port, one connection per request: the body of a 200.
fn get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {out:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("status: {head:?}"));
    }
    Ok(body.trim().to_string())
}

fn group(a: &Aac, name: &str) -> Value {
    serde_json::from_str(&a.ok(&["autoscale", "status", name, "--json"])).unwrap()
}

fn wait_group(a: &Aac, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let g = group(a, name);
        if pred(&g) {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {what}: {g:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn in_rotation(g: &Value, replica: &str) -> bool {
    g["Backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == replica && b["inRotation"] == true)
}

fn replica_names(a: &Aac, agent: &str) -> Vec<String> {
    let ps: Value = serde_json::from_str(&a.ok(&["ps", "-a", "--format", "json"])).unwrap();
    let mut v: Vec<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Agent"] == agent)
        .map(|c| c["Names"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn ids(port: u16, n: usize) -> BTreeSet<String> {
    (0..n).map(|_| get(port, "/id").unwrap()).collect()
}

fn events(a: &Aac, name: &str) -> Vec<Value> {
    a.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "type=scale",
        "--format",
        "json",
    ])
    .lines()
    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    .filter(|e| e["name"] == name)
    .collect()
}

#[test]
fn three_replicas_answer_on_one_port_and_an_unhealthy_one_leaves_the_rotation() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let dir = agent_dir(
        "sc-web",
        port,
        "  scaling:\n    replicas: 3\n    minReplicas: 1\n    maxReplicas: 4\n",
    );
    let _down = Down("sc-web");
    let out = up(a, dir.path(), &[]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["sc-web-1", "sc-web-2", "sc-web-3"]
    );
    // One port, three different replicas answering.
    let seen = ids(port, 30);
    let want: BTreeSet<String> = ["sc-web-1", "sc-web-2", "sc-web-3"]
        .map(String::from)
        .into();
    assert_eq!(seen, want);
    // ps groups them under the agent.
    assert_eq!(
        replica_names(a, "sc-web"),
        ["sc-web-1", "sc-web-2", "sc-web-3"]
    );
    let table = a.ok(&["ps"]);
    assert!(table.lines().next().unwrap().contains("AGENT"), "{table}");
    // Unhealthy: out of the rotation, no traffic; healthy again: back.
    a.ok(&["exec", "sc-web-2", "rm", "/tmp/healthy"]);
    wait_group(a, "sc-web", "sc-web-2 out of the rotation", |g| {
        !in_rotation(g, "sc-web-2")
    });
    let seen = ids(port, 30);
    assert!(!seen.contains("sc-web-2"), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    a.ok(&["exec", "sc-web-2", "touch", "/tmp/healthy"]);
    wait_group(a, "sc-web", "sc-web-2 back in the rotation", |g| {
        in_rotation(g, "sc-web-2")
    });
    assert!(ids(port, 30).contains("sc-web-2"));
    // A supervisor killed with SIGKILL is brought back (as a monitor is) by the next command.
    let pid = group(a, "sc-web")["SupervisorPid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the supervisor did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    a.ok(&["ps"]);
    let g = group(a, "sc-web");
    assert_eq!(g["SupervisorAlive"], true, "{g:#}");
    assert_ne!(g["SupervisorPid"].as_i64().unwrap(), pid);
    assert_eq!(ids(port, 30).len(), 3);
    // The agent's name removes all of it.
    a.ok(&["rm", "-f", "sc-web"]);
    assert!(replica_names(a, "sc-web").is_empty());
    assert!(!a.data_dir.join("agents/sc-web").exists());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is still published"
    );
}

#[test]
fn scaling_3_to_1_and_back_under_load_fails_no_request() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let dir = agent_dir(
        "sc-load",
        port,
        "  scaling:\n    replicas: 3\n    minReplicas: 1\n    maxReplicas: 3\n",
    );
    let _down = Down("sc-load");
    up(a, dir.path(), &[("AAC_DRAIN_TIMEOUT", "30s")]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match get(port, "/id") {
                        Ok(body) if body.starts_with("sc-load-") => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(body) => failed.lock().unwrap().push(format!("body {body:?}")),
                        Err(e) => failed.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let wait_ok = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ok.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_ok(50);
    a.ok(&["scale", "sc-load", "1"]);
    wait_group(a, "sc-load", "one replica left", |g| {
        g["Replicas"].as_array().unwrap().len() == 1
    });
    assert_eq!(replica_names(a, "sc-load"), ["sc-load-1"]);
    let before = ok.load(Ordering::SeqCst);
    wait_ok(before + 50);
    a.ok(&["scale", "sc-load", "3"]);
    wait_group(a, "sc-load", "three replicas in rotation", |g| {
        g["Backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["inRotation"] == true)
            .count()
            == 3
    });
    let before = ok.load(Ordering::SeqCst);
    wait_ok(before + 50);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok.load(Ordering::SeqCst) >= 150);
    // Outside minReplicas..maxReplicas: refused.
    let out = a.run(&["scale", "sc-load", "9"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("outside minReplicas..maxReplicas"),
        "{}",
        text(&out.stderr)
    );
    // Every change is an event.
    let ev = events(a, "sc-load");
    let counts: Vec<&str> = ev
        .iter()
        .filter_map(|e| e["attributes"]["replicas"].as_str())
        .collect();
    assert_eq!(counts, ["3", "1", "3"], "{ev:?}");
    a.ok(&["down", "sc-load"]);
    assert!(replica_names(a, "sc-load").is_empty());
}

#[test]
fn a_cpu_load_scales_up_and_idle_scales_down() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let dir = agent_dir(
        "sc-hpa",
        port,
        "  resources:\n    requests:\n      cpu: 100m\n  scaling:\n    replicas: 1\n    minReplicas: 1\n    maxReplicas: 3\n  autoscaling:\n    enabled: true\n    targetCPUUtilizationPercentage: 50\n    scaleUpDelay: 2s\n    scaleDownDelay: 6s\n",
    );
    let _down = Down("sc-hpa");
    up(a, dir.path(), &[("AAC_AUTOSCALE_PERIOD", "1s")]);
    let g = group(a, "sc-hpa");
    assert_eq!(g["DesiredReplicas"], 1);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = get(port, "/cgi-bin/burn");
                }
            })
        })
        .collect();
    let g = wait_group(a, "sc-hpa", "a scale-up", |g| {
        g["DesiredReplicas"].as_u64().unwrap() >= 2
    });
    let m = &g["Autoscale"]["metrics"][0];
    assert_eq!(m["resource"], "cpu");
    assert!(m["currentUtilization"].as_u64().unwrap() > 50, "{g:#}");
    let described = a.ok(&["autoscale", "status", "sc-hpa"]);
    assert!(
        described.contains("resource cpu on replicas"),
        "{described}"
    );
    assert!(described.contains("Last decision"), "{described}");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    // Idle: back to minReplicas once the down window passed.
    let g = wait_group(a, "sc-hpa", "a scale-down", |g| {
        g["DesiredReplicas"] == 1 && g["Replicas"].as_array().unwrap().len() == 1
    });
    assert!(
        g["Autoscale"]["lastScaleReason"]
            .as_str()
            .unwrap()
            .starts_with("autoscaler"),
        "{g:#}"
    );
    let ev = events(a, "sc-hpa");
    assert!(
        ev.iter()
            .any(|e| e["attributes"]["by"] == "autoscaler" && e["attributes"]["from"] == "1"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e["attributes"]["by"] == "autoscaler" && e["attributes"]["replicas"] == "1"),
        "{ev:?}"
    );
    a.ok(&["down", "sc-hpa"]);
}

#[test]
fn utilization_targets_need_requests() {
    let a = aac();
    let dir = agent_dir(
        "sc-noreq",
        free_port(),
        "  scaling:\n    replicas: 1\n    maxReplicas: 3\n  autoscaling:\n    enabled: true\n    targetCPUUtilizationPercentage: 50\n",
    );
    let out = a.run(&["up", "-d", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("agent.yaml:") && err.contains("spec.resources.requests.cpu"),
        "{err}"
    );
}

#[test]
fn update_memory_is_seen_in_the_cgroup_inside() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&["run", "-d", "--name", "sc-upd", IMAGE, "sleep", "600"]);
    a.ok(&[
        "update",
        "--memory",
        "64m",
        "--pids-limit",
        "77",
        "--cpus",
        "0.5",
        "--restart",
        "always",
        "sc-upd",
    ]);
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max";
    let out = a.ok(&["exec", "sc-upd", "sh", "-c", script]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["67108864", "77", "50000"]
    );
    let c = a.inspect("sc-upd");
    assert_eq!(c["Agent"]["spec"]["restartPolicy"]["name"], "always");
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert_eq!(c["HostConfig"]["Memory"], 67108864);
    assert_eq!(
        c["Agent"]["spec"]["resources"]["limits"]["memory"],
        67108864
    );
    // Bad input: one line, 125.
    let out = a.run(&["update", "--memory", "lots", "sc-upd"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    a.ok(&["rm", "-f", "sc-upd"]);
}

#[test]
fn process_backend_replicas_share_one_port() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: sc-proc\nspec:\n  command: [sh, -c, 'mkdir -p /tmp/$AAC_REPLICA && echo $AAC_REPLICA > /tmp/$AAC_REPLICA/id && exec busybox httpd -f -p $PORT -h /tmp/$AAC_REPLICA']\n  ports:\n    - container: 8080\n      host: {port}\n  scaling:\n    replicas: 2\n    maxReplicas: 3\n"
        ),
    )
    .unwrap();
    let _down = Down("sc-proc");
    let out = a.ok(&[
        "up",
        "-d",
        "--runtime",
        "process",
        &dir.path().to_string_lossy(),
    ]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["sc-proc-1", "sc-proc-2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "only {seen:?} answered");
        if let Ok(id) = get(port, "/id") {
            seen.insert(id);
        }
    }
    a.ok(&["scale", "sc-proc", "3"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("sc-proc-3") {
        assert!(
            Instant::now() < deadline,
            "sc-proc-3 never answered: {seen:?}"
        );
        if let Ok(id) = get(port, "/id") {
            seen.insert(id);
        }
    }
    // `aac update` on the agent reaches every replica's cgroup (read on the host: a host
    // process may not read its own cgroup's files).
    a.ok(&["update", "--memory", "48m", "sc-proc"]);
    for r in ["sc-proc-1", "sc-proc-2", "sc-proc-3"] {
        let path = a.inspect(r)["Cgroup"]["fsPath"]
            .as_str()
            .unwrap()
            .to_string();
        let v1 = format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes");
        let v2 = format!("/sys/fs/cgroup{path}/memory.max");
        let got = std::fs::read_to_string(&v1)
            .or_else(|_| std::fs::read_to_string(&v2))
            .unwrap();
        assert_eq!(got.trim(), (48u64 << 20).to_string(), "{r}");
    }
    a.ok(&["down", "sc-proc"]);
    assert!(replica_names(a, "sc-proc").is_empty());
}
