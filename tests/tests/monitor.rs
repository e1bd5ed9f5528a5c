//! The per-container monitor (aac-shim) end to end, through the `aac` binary on a private
//! containerd: logs and their rotation, health checks, restart policies, OOM, a monitor killed
//! with SIGKILL and a full disk under the log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use aac_tests::cli::{aac, text, Aac};
use aac_tests::IMAGE;
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

const LONG: Duration = Duration::from_secs(60);

fn id_of(a: &Aac, name: &str) -> String {
    a.inspect(name)["Id"].as_str().unwrap().to_string()
}

fn container_dir(a: &Aac, name: &str) -> PathBuf {
    a.data_dir.join("containers").join(id_of(a, name))
}

/// Numbers of the lines of `out` (each line a number).
fn numbers(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l:?}"))
        })
        .collect()
}

fn assert_consecutive(nums: &[u64]) {
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or repeat after {}", w[0]);
    }
}

fn state(a: &Aac, name: &str) -> Value {
    a.inspect(name)["State"].clone()
}

fn up_yaml(a: &Aac, name: &str, body: &str, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  image: {IMAGE}\n{body}"
        ),
    )
    .unwrap();
    let path = dir.path().to_string_lossy().to_string();
    let mut args = vec!["up", "-d"];
    args.extend_from_slice(extra);
    args.push(&path);
    a.ok(&args);
    dir
}

#[test]
fn rotation_keeps_a_gap_free_suffix_in_max_file_files() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "rotate",
        "--log-opt",
        "max-size=16k",
        "--log-opt",
        "max-file=3",
        IMAGE,
        "seq",
        "1",
        "20000",
    ]);
    assert_eq!(a.ok(&["wait", "rotate"]).trim(), "0");
    let nums = numbers(&a.ok(&["logs", "rotate"]));
    assert!(
        nums.len() > 100 && nums.len() < 20000,
        "{} lines",
        nums.len()
    );
    assert_eq!(*nums.last().unwrap(), 20000);
    assert_consecutive(&nums);
    let dir = container_dir(a, "rotate");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("json.log"))
        .collect();
    files.sort();
    assert_eq!(files, ["json.log", "json.log.1", "json.log.2"]);
    for f in &files {
        let len = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(len <= 16 * 1024, "{f} has {len} bytes");
    }
    let tail = numbers(&a.ok(&["logs", "--tail", "5", "rotate"]));
    assert_eq!(tail, [19996, 19997, 19998, 19999, 20000]);
    a.ok(&["rm", "rotate"]);
}

#[test]
fn follow_sees_every_line_once_across_rotations() {
    if !root() {
        return;
    }
    let a = aac();
    // 20 bursts of 1000 lines (about 70 KiB of log each, one rotation), a pause between.
    a.ok(&[
        "run",
        "-d",
        "--name",
        "follow",
        "--log-opt",
        "max-size=64k",
        "--log-opt",
        "max-file=3",
        IMAGE,
        "sh",
        "-c",
        "sleep 2; i=0; while [ $i -lt 20 ]; do seq $((i*1000+1)) $((i*1000+1000)); i=$((i+1)); sleep 0.3; done",
    ]);
    let mut child = a
        .command(&["logs", "-f", "follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let nums = numbers(&out);
    assert_eq!(nums.first(), Some(&1));
    assert_eq!(nums.last(), Some(&20000));
    assert_eq!(nums.len(), 20000);
    assert_consecutive(&nums);
    // more than max-file files were written: it did rotate
    let files = std::fs::read_dir(container_dir(a, "follow"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("json.log"))
        .count();
    assert_eq!(files, 3);
    a.ok(&["rm", "follow"]);
}

#[test]
fn since_until_tail_timestamps_and_streams() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "streams",
        IMAGE,
        "sh",
        "-c",
        // stdout and stderr are two pipes: only a pause orders lines across them
        "echo out1; sleep 0.3; echo err1 >&2; sleep 2; echo out2; sleep 0.3; echo err2 >&2",
    ]);
    assert_eq!(a.ok(&["wait", "streams"]).trim(), "0");
    let out = a.run(&["logs", "streams"]);
    assert_eq!(text(&out.stdout), "out1\nout2\n");
    assert_eq!(text(&out.stderr), "err1\nerr2\n");

    // -t: RFC 3339 times first
    let out = a.run(&["logs", "-t", "streams"]);
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2);
    let times: Vec<String> = lines
        .iter()
        .map(|l| {
            let (t, rest) = l.split_once(' ').unwrap();
            assert!(rest.starts_with("out"), "{l}");
            assert!(t.ends_with('Z') && t.contains('T'), "{l}");
            t.to_string()
        })
        .collect();
    let err_lines = text(&out.stderr);
    let err_times: Vec<&str> = err_lines
        .lines()
        .map(|l| l.split_once(' ').unwrap().0)
        .collect();

    // --since the second output line: only what came after the pause
    let out = a.run(&["logs", "--since", &times[1], "streams"]);
    assert_eq!(text(&out.stdout), "out2\n");
    assert_eq!(text(&out.stderr), "err2\n");
    // --until the first error line: only what came before the pause
    let out = a.run(&["logs", "--until", err_times[0], "streams"]);
    assert_eq!(text(&out.stdout), "out1\n");
    assert_eq!(text(&out.stderr), "err1\n");
    // relative times
    assert_eq!(a.ok(&["logs", "--since", "1h", "streams"]), "out1\nout2\n");
    assert_eq!(a.ok(&["logs", "--until", "1h", "streams"]), "");
    // --tail counts lines of both streams
    let out = a.run(&["logs", "--tail", "1", "streams"]);
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "err2\n");
    let out = a.run(&["logs", "--since", "yesterday-ish", "streams"]);
    assert!(!out.status.success());
    // a foreground run shows the same split
    let out = a.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo fg-out; echo fg-err >&2",
    ]);
    assert_eq!(text(&out.stdout), "fg-out\n");
    assert_eq!(text(&out.stderr), "fg-err\n");
    a.ok(&["rm", "streams"]);
}

fn health(a: &Aac, name: &str) -> Value {
    state(a, name)["Health"].clone()
}

fn wait_health(a: &Aac, name: &str, want: &str) -> Value {
    a.wait_for(name, LONG, &format!("health {want}"), |v| {
        v["State"]["Health"]["Status"] == want
    })["State"]["Health"]
        .clone()
}

/// starting -> healthy -> unhealthy (-> healthy), driven by `exec`ing `make_healthy` and
/// `make_unhealthy` in the container.
fn health_transitions(name: &str, make_healthy: &str, make_unhealthy: &str) {
    let a = aac();
    let h = health(a, name);
    assert_eq!(h["Status"], "starting", "{h}");
    // not healthy yet: the probe fails, but during the start period that does not count
    a.ok(&["exec", name, "sh", "-c", make_healthy]);
    let h = wait_health(a, name, "healthy");
    assert_eq!(h["FailingStreak"], 0);
    assert!(h["Log"].as_array().unwrap().last().unwrap()["Healthy"] == true);
    let ps = a.ok(&["ps"]);
    let line = ps.lines().find(|l| l.contains(name)).unwrap();
    assert!(line.contains("(healthy)"), "{line}");

    a.ok(&["exec", name, "sh", "-c", make_unhealthy]);
    let h = wait_health(a, name, "unhealthy");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let ps = a.ok(&["ps"]);
    let line = ps.lines().find(|l| l.contains(name)).unwrap();
    assert!(line.contains("(unhealthy)"), "{line}");
    // the last 5 results are kept, with times
    a.wait_for(name, LONG, "5 probe results", |v| {
        v["State"]["Health"]["Log"].as_array().unwrap().len() == 5
    });
    std::thread::sleep(Duration::from_secs(2));
    let h = health(a, name);
    let log = h["Log"].as_array().unwrap();
    assert_eq!(log.len(), 5, "{h}");
    let last = log.last().unwrap();
    assert_eq!(last["Healthy"], false);
    assert!(last["Start"].as_str().unwrap() <= last["End"].as_str().unwrap());
    assert_ne!(last["ExitCode"], 0);
    // still running: unhealthy alone does nothing (onUnhealthy: none)
    assert_eq!(state(a, name)["Status"], "running");
    // probes write nothing to the container's log
    let logs = a.run(&["logs", name]);
    assert!(
        !text(&logs.stdout).contains("probe-said") && !text(&logs.stderr).contains("probe-said"),
        "{}",
        text(&logs.stdout)
    );
    a.ok(&["rm", "-f", name]);
}

const TIMING: &str = "    interval: 1s\n    timeout: 2s\n    retries: 2\n    startPeriod: 1s\n";

#[test]
fn health_command_probe() {
    if !root() {
        return;
    }
    up_yaml(
        aac(),
        "hc-command",
        &format!("  command: [sleep, '600']\n  healthCheck:\n    command: 'echo probe-said; test -f /tmp/ok'\n{TIMING}"),
        &["--no-wait"],
    );
    health_transitions("hc-command", "touch /tmp/ok", "rm /tmp/ok");
    // the output of command probes is kept
}

#[test]
fn health_http_probe() {
    if !root() {
        return;
    }
    up_yaml(
        aac(),
        "hc-http",
        &format!("  command: [sh, -c, 'mkdir -p /www && exec httpd -f -p 8080 -h /www']\n  healthCheck:\n    http:\n      port: 8080\n      path: /ok.html\n{TIMING}"),
        &["--no-wait"],
    );
    health_transitions("hc-http", "echo fine > /www/ok.html", "rm /www/ok.html");
}

#[test]
fn health_tcp_probe() {
    if !root() {
        return;
    }
    up_yaml(
        aac(),
        "hc-tcp",
        &format!("  command: [sh, -c, 'while :; do if [ -f /tmp/up ]; then httpd -f -p 9000 -h / & p=$!; while [ -f /tmp/up ]; do sleep 0.2; done; kill $p; fi; sleep 0.2; done']\n  healthCheck:\n    tcp:\n      port: 9000\n{TIMING}"),
        &["--no-wait"],
    );
    health_transitions("hc-tcp", "touch /tmp/up", "rm /tmp/up");
}

#[test]
fn health_file_probe() {
    if !root() {
        return;
    }
    up_yaml(
        aac(),
        "hc-file",
        &format!("  command: [sleep, '600']\n  healthCheck:\n    file:\n      path: /tmp/alive\n{TIMING}"),
        &["--no-wait"],
    );
    health_transitions("hc-file", "touch /tmp/alive", "rm /tmp/alive");
}

#[test]
fn run_waits_for_healthy_or_fails_with_the_last_probe_output() {
    if !root() {
        return;
    }
    let a = aac();
    let started = Instant::now();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "gets-ready",
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "1s",
        "--health-retries",
        "3",
        "--health-start-period",
        "5s",
        IMAGE,
        "sh",
        "-c",
        "sleep 2; touch /tmp/ready; sleep 600",
    ]);
    // it returned only once healthy
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(health(a, "gets-ready")["Status"], "healthy");
    a.ok(&["rm", "-f", "gets-ready"]);

    let out = a.run(&[
        "run",
        "-d",
        "--name",
        "never-ready",
        "--health-cmd",
        "echo still-warming-up; exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("did not become healthy") && err.contains("still-warming-up"),
        "{err}"
    );
    // --no-wait returns before the first probe (due only after the 300 s interval): it
    // succeeds, and the health is still "starting". (Waiting, it would fail as above once
    // that one probe failed.)
    a.ok(&[
        "run",
        "-d",
        "--no-wait",
        "--name",
        "no-wait",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "300s",
        "--health-retries",
        "1",
        IMAGE,
        "sleep",
        "600",
    ]);
    let h = health(a, "no-wait");
    assert_eq!(h["Status"], "starting", "{h}");
    assert_eq!(h["FailingStreak"], 0, "{h}");
    a.ok(&["rm", "-f", "no-wait"]);
}

#[test]
fn unhealthy_restarts_or_stops_when_asked() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--no-wait",
        "--name",
        "hc-restart",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-on-failure",
        "restart",
        IMAGE,
        "sleep",
        "600",
    ]);
    a.wait_for("hc-restart", LONG, "a restart", |v| {
        v["State"]["RestartCount"].as_u64().unwrap() >= 1
    });
    a.ok(&["rm", "-f", "hc-restart"]);

    up_yaml(
        a,
        "hc-stop",
        "  command: [sleep, '600']\n  healthCheck:\n    command: 'exit 1'\n    interval: 1s\n    retries: 1\n    onUnhealthy: stop\n",
        &["--no-wait"],
    );
    let v = a.wait_for("hc-stop", LONG, "a stop", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(v["State"]["RestartCount"], 0);
    a.ok(&["rm", "hc-stop"]);
}

fn events(a: &Aac, id: &str, kind: &str) -> Vec<SystemTime> {
    let body = std::fs::read_to_string(a.data_dir.join("events.jsonl")).unwrap_or_default();
    body.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["id"] == id && e["type"] == kind)
        .map(|e| aac_runtime::status::parse_time(e["time"].as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn restart_no_and_on_failure_with_a_limit() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "r-no",
        "--restart",
        "no",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(a.ok(&["wait", "r-no"]).trim(), "3");
    let s = state(a, "r-no");
    assert_eq!(s["RestartCount"], 0);
    assert_eq!(s["ExitCode"], 3);

    a.ok(&[
        "run",
        "-d",
        "--name",
        "r-fail",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "echo ran; exit 1",
    ]);
    // As docker's, `wait` returns at the first exit even when a restart follows.
    assert_eq!(a.ok(&["wait", "r-fail"]).trim(), "1");
    a.wait_for("r-fail", LONG, "its restarts to run out", |v| {
        v["State"]["Status"] == "exited"
    });
    let s = state(a, "r-fail");
    assert_eq!(s["RestartCount"], 2);
    assert_eq!(a.ok(&["logs", "r-fail"]), "ran\nran\nran\n");
    // on-failure does not restart after success
    a.ok(&[
        "run",
        "-d",
        "--name",
        "r-fail-ok",
        "--restart",
        "on-failure",
        IMAGE,
        "true",
    ]);
    assert_eq!(a.ok(&["wait", "r-fail-ok"]).trim(), "0");
    assert_eq!(state(a, "r-fail-ok")["RestartCount"], 0);
    a.ok(&["rm", "r-no", "r-fail", "r-fail-ok"]);
}

#[test]
fn restart_always_backs_off_and_stop_ends_it() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "r-always",
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "echo ran; exit 0",
    ]);
    let id = id_of(a, "r-always");
    a.wait_for("r-always", LONG, "5 restarts", |v| {
        v["State"]["RestartCount"].as_u64().unwrap() >= 5
    });
    // The gap between an exit and the restart after it grows: 100 ms, 200 ms, 400 ms, ...
    let dies = events(a, &id, "die");
    let restarts = events(a, &id, "restart");
    assert!(restarts.len() >= 5, "{restarts:?}");
    let gaps: Vec<Duration> = restarts
        .iter()
        .zip(&dies)
        .map(|(r, d)| r.duration_since(*d).unwrap())
        .collect();
    for (i, g) in gaps.iter().enumerate().take(5) {
        let backoff = Duration::from_millis(100 << i);
        assert!(*g >= backoff.mul_f64(0.9), "gap {i} is {g:?}: {gaps:?}");
    }
    assert!(gaps[4] > gaps[0], "{gaps:?}");

    a.ok(&["stop", "r-always"]);
    let before = state(a, "r-always");
    assert_eq!(before["Status"], "exited");
    assert_eq!(before["StoppedByUser"], true);
    std::thread::sleep(Duration::from_secs(3));
    let after = state(a, "r-always");
    assert_eq!(after["Status"], "exited");
    assert_eq!(after["RestartCount"], before["RestartCount"]);
    a.ok(&["rm", "r-always"]);
}

#[test]
fn unless_stopped_restarts_until_stopped() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "r-unless",
        "--restart",
        "unless-stopped",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 5",
    ]);
    a.wait_for("r-unless", LONG, "a restart", |v| {
        v["State"]["RestartCount"].as_u64().unwrap() >= 1 && v["State"]["Status"] == "running"
    });
    a.ok(&["stop", "r-unless"]);
    let before = state(a, "r-unless");
    std::thread::sleep(Duration::from_secs(3));
    let after = state(a, "r-unless");
    assert_eq!(after["Status"], "exited");
    assert_eq!(after["RestartCount"], before["RestartCount"]);
    assert!(!a.ok(&["ps"]).contains("r-unless"));
    a.ok(&["rm", "r-unless"]);
}

#[test]
fn oom_kill_is_reported() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "oom",
        "--memory",
        "16m",
        IMAGE,
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    let code = a.ok(&["wait", "oom"]);
    let s = state(a, "oom");
    assert_eq!(code.trim(), "137", "{s}\n{}", a.ok(&["logs", "oom"]));
    assert_eq!(s["OOMKilled"], true, "{s}");
    assert_eq!(s["ExitCode"], 137);
    assert!(!a.ok(&["logs", "oom"]).contains("survived"));
    // and a plain exit 137 is no OOM
    a.ok(&[
        "run", "-d", "--name", "not-oom", IMAGE, "sh", "-c", "exit 137",
    ]);
    assert_eq!(a.ok(&["wait", "not-oom"]).trim(), "137");
    assert_eq!(state(a, "not-oom")["OOMKilled"], false);
    a.ok(&["rm", "oom", "not-oom"]);
}

fn kill9(pid: i64) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !c.is_empty())
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "monitor {pid} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn task_running(id: &str) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        aac_tests::client()
            .await
            .task_state(id)
            .await
            .map(|s| s.status == aac_runtime::containerd::TaskStatus::Running)
            .unwrap_or(false)
    })
}

#[test]
fn killed_monitor_leaves_the_container_and_a_new_one_adopts_it() {
    if !root() {
        return;
    }
    let a = aac();
    // 60 ticks, then a failure: the restart policy must still apply after the re-attach.
    a.ok(&[
        "run",
        "-d",
        "--name",
        "orphan",
        "--restart",
        "on-failure:1",
        IMAGE,
        "sh",
        "-c",
        "i=0; while [ $i -lt 60 ]; do echo $i; i=$((i+1)); sleep 0.1; done; exit 1",
    ]);
    let id = id_of(a, "orphan");
    a.wait_for("orphan", LONG, "output", |_| {
        a.ok(&["logs", "orphan"]).lines().count() >= 3
    });
    let old = state(a, "orphan")["MonitorPid"].as_i64().unwrap();
    kill9(old);
    assert!(task_running(&id), "the container died with its monitor");
    std::thread::sleep(Duration::from_millis(500));
    assert!(task_running(&id));
    // ps still lists it and brings a monitor back
    let out = a.run(&["ps"]);
    let ps = text(&out.stdout);
    assert!(
        ps.lines()
            .any(|l| l.contains("orphan") && l.contains("Up ")),
        "{ps}"
    );
    let s = state(a, "orphan");
    let new = s["MonitorPid"].as_i64().unwrap();
    let shim_log = std::fs::read_to_string(a.run_dir.join("containers").join(&id).join("shim.log"))
        .unwrap_or_default();
    assert_ne!(new, old, "ps: {}\nshim.log: {shim_log}", text(&out.stderr));
    assert_eq!(s["MonitorAlive"], true, "{s}");
    // the first run's output reaches the log whole, across the gap; then the restart
    let v = a.wait_for("orphan", LONG, "the restart and its exit", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(v["State"]["RestartCount"], 1);
    assert_eq!(v["State"]["ExitCode"], 1);
    let nums = numbers(&a.ok(&["logs", "orphan"]));
    let expected: Vec<u64> = (0..60).chain(0..60).collect();
    assert_eq!(nums, expected);
    a.ok(&["rm", "orphan"]);

    // stop and rm work on a container whose monitor was killed
    a.ok(&["run", "-d", "--name", "orphan2", IMAGE, "sleep", "600"]);
    let id2 = id_of(a, "orphan2");
    kill9(state(a, "orphan2")["MonitorPid"].as_i64().unwrap());
    a.ok(&["stop", "-t", "1", "orphan2"]);
    assert!(!task_running(&id2));
    assert_eq!(state(a, "orphan2")["Status"], "exited");
    a.ok(&["run", "-d", "--name", "orphan3", IMAGE, "sleep", "600"]);
    let id3 = id_of(a, "orphan3");
    kill9(state(a, "orphan3")["MonitorPid"].as_i64().unwrap());
    a.ok(&["rm", "-f", "orphan3", "orphan2"]);
    assert!(!task_running(&id3));
    assert!(a.run(&["inspect", "orphan3"]).status.code() != Some(0));
}

/// aac state of its own whose data folder is a small tmpfs.
struct SmallDisk {
    aac: Aac,
    mount: PathBuf,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.aac.command(&["rm", "-f", "full"]).output();
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(self.mount.parent().unwrap());
    }
}

#[test]
fn full_disk_drops_lines_and_keeps_the_container_running() {
    if !root() {
        return;
    }
    let main = aac(); // the image is imported into containerd
    let base = PathBuf::from(format!("/tmp/aac-cli/{}-full", std::process::id()));
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &data,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k,mode=0700"),
    )
    .unwrap();
    let disk = SmallDisk {
        aac: Aac {
            run_dir: base.join("run"),
            data_dir: data.clone(),
            bridge: main.bridge.clone(),
        },
        mount: data,
    };
    let a = &disk.aac;
    a.ok(&[
        "run",
        "-d",
        "--name",
        "full",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "while :; do seq 1 2000; sleep 0.1; done",
    ]);
    let v = a.wait_for("full", LONG, "dropped lines", |v| {
        v["State"]["LogDroppedLines"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(v["State"]["Status"], "running");
    std::thread::sleep(Duration::from_secs(2));
    let s = state(a, "full");
    assert_eq!(s["Status"], "running");
    assert_eq!(s["MonitorAlive"], true);
    assert!(
        s["LogDroppedLines"].as_u64().unwrap() > v["State"]["LogDroppedLines"].as_u64().unwrap(),
        "the count does not grow: {s}"
    );
    assert!(task_running(&id_of(a, "full")));
    assert_eq!(a.run(&["exec", "full", "true"]).status.code(), Some(0));
    let out = a.run(&["logs", "full"]);
    assert!(
        text(&out.stderr).contains("dropped"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).is_empty());
    a.ok(&["rm", "-f", "full"]);
}

/// Inspect `name` once it exists (a foreground run creates it a moment after it starts).
fn inspect_when_there(a: &Aac, name: &str) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let out = a.run(&["inspect", name]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v[0]["State"]["Status"] == "running" {
                return v[0].clone();
            }
        }
        assert!(Instant::now() < deadline, "{name} never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A foreground `run --rm` (no terminal, health check or restart policy) is monitored by the
/// `aac run` process itself, on both backends: no aac-shim runs for it. Killed with SIGKILL,
/// it leaves the container running; the next `aac ps` gives it a monitor, which removes it
/// once it has exited, and nothing of it is left.
#[test]
fn foreground_rm_run_is_its_own_monitor_and_a_killed_one_is_adopted() {
    if !root() {
        return;
    }
    let a = aac();
    let script = "i=0; while [ $i -lt 80 ]; do echo $i; i=$((i+1)); sleep 0.1; done";
    for (name, how) in [
        ("fg-ctrd", vec![IMAGE, "sh", "-c", script]),
        (
            "fg-proc",
            vec!["--runtime", "process", "/bin/sh", "-c", script],
        ),
    ] {
        let mut args = vec!["run", "--rm", "--name", name];
        args.extend(how);
        let mut cli = a.command(&args).stdout(Stdio::piped()).spawn().unwrap();
        let v = inspect_when_there(a, name);
        let id = v["Id"].as_str().unwrap().to_string();
        assert_eq!(
            v["State"]["MonitorPid"].as_i64(),
            Some(i64::from(cli.id())),
            "{name}: the monitor is `aac run` itself: {}",
            v["State"]
        );
        assert_eq!(
            aac_tests::cli::shim_pids(&id).len(),
            0,
            "{name}: an aac-shim runs for it"
        );
        // The first lines reached the terminal through the log.
        let mut first = [0u8; 2];
        cli.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
        assert_eq!(&first, b"0\n", "{name}");

        kill9(i64::from(cli.id()));
        let _ = cli.wait();
        let ps = a.ok(&["ps"]);
        assert!(ps.lines().any(|l| l.contains(name)), "{name}: {ps}");
        let after = a.inspect(name)["State"].clone();
        assert_eq!(after["MonitorAlive"], true, "{name}: ps gave it a monitor");
        // The agent outlived the command (its 80 lines take 8 s): the new monitor adopted it
        // running, it did not collect an exit.
        assert_eq!(after["Status"], "running", "{name}: {after}");
        let deadline = Instant::now() + LONG;
        while a.record_ids().contains(&id) {
            assert!(
                Instant::now() < deadline,
                "{name}: not removed after its exit"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!task_running(&id), "{name}: its task is left");
        assert_eq!(
            aac_tests::cli::shim_pids(&id).len(),
            0,
            "{name}: its monitor is left"
        );
        assert!(
            !a.run_dir.join("containers").join(&id).exists(),
            "{name}: its volatile state is left"
        );
    }
}

/// `aac stop` from elsewhere ends a foreground `run --rm` that is its own monitor: the run
/// returns the container's exit code and the container is gone, with no aac-shim involved.
#[test]
fn stop_ends_a_foreground_rm_run_that_is_its_own_monitor() {
    if !root() {
        return;
    }
    let a = aac();
    for (name, how) in [
        ("fgstop-ctrd", vec![IMAGE, "sleep", "60"]),
        (
            "fgstop-proc",
            vec!["--runtime", "process", "/bin/sleep", "60"],
        ),
    ] {
        let mut args = vec!["run", "--rm", "--name", name];
        args.extend(how);
        let mut cli = a.command(&args).spawn().unwrap();
        let id = inspect_when_there(a, name)["Id"]
            .as_str()
            .unwrap()
            .to_string();
        // sleep, as PID 1 of its namespace, ignores SIGTERM: the stop ends in SIGKILL.
        a.ok(&["stop", "-t", "1", name]);
        let code = cli.wait().unwrap().code();
        assert_eq!(code, Some(137), "{name}: aac run's exit code");
        assert!(
            !a.record_ids().contains(&id),
            "{name}: its records are left"
        );
        assert_eq!(
            aac_tests::cli::shim_pids(&id).len(),
            0,
            "{name}: an aac-shim ran for it"
        );
    }
}
