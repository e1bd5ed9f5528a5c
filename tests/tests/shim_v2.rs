//! aac's containerd runtime shim (`containerd-shim-aac-v2`, runtime `io.containerd.aac.v2`)
//! end to end: containers run through `aac` with `AAC_CONTAINERD_RUNTIME=aac` on a private
//! containerd; what the container writes, its exit codes, execs, health checks, restarts,
//! OOM kills and `--rm` are observed through aac, containerd (`ctr`) and /proc.

use std::process::{Command, Output};
use std::time::Duration;

use aac_tests::cli::{aac, bin, text, Aac};
use aac_tests::{env, IMAGE, NAMESPACE};
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

const LONG: Duration = Duration::from_secs(60);

/// One test at a time: one of them restarts this binary's containerd.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `aac ARGS` with the aac shim as the containerd runtime.
fn run(a: &Aac, args: &[&str]) -> Output {
    let _ = bin("containerd-shim-aac-v2");
    a.command(args)
        .env("AAC_CONTAINERD_RUNTIME", "aac")
        .output()
        .unwrap()
}

fn ok(a: &Aac, args: &[&str]) -> String {
    let out = run(a, args);
    assert!(
        out.status.success(),
        "aac {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ctr(args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&env().socket)
        .arg("--namespace")
        .arg(NAMESPACE)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn id_of(a: &Aac, name: &str) -> String {
    a.inspect(name)["Id"].as_str().unwrap().to_string()
}

/// The pids of the aac shims serving container `id`.
fn shim_pids(id: &str) -> Vec<i32> {
    aac_tests::cli::pids_where(|cmd| cmd.contains("containerd-shim-aac-v2") && cmd.contains(id))
}

fn state(a: &Aac, name: &str) -> Value {
    a.inspect(name)["State"].clone()
}

#[test]
fn a_container_runs_under_the_aac_shim_and_ctr_sees_its_task() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-basic",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo out-line; echo err-line >&2; exec sleep 300",
        ],
    );
    let id = id_of(a, "v2-basic");
    a.wait_for("v2-basic", LONG, "running", |v| {
        v["State"]["Running"] == true
    });
    // containerd knows the container under the aac runtime, and its task runs.
    let info = ctr(&["containers", "info", &id]);
    assert!(info.contains("containerd-shim-aac-v2") || info.contains("io.containerd.aac.v2"));
    let tasks = ctr(&["tasks", "ls"]);
    let line = tasks
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("ctr tasks ls lacks {id}:\n{tasks}"));
    assert!(line.contains("RUNNING"), "{line}");
    let pid = state(a, "v2-basic")["Pid"].as_u64().unwrap();
    assert!(line.contains(&pid.to_string()), "{line} vs pid {pid}");
    assert_eq!(shim_pids(&id).len(), 1, "one aac shim for {id}");
    // What the container wrote reached aac's log, each stream tagged.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let out = run(a, &["logs", "v2-basic"]);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        if o.contains("out-line") && e.contains("err-line") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "logs: {o:?} {e:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // exec reaches the container's namespaces and returns its exit code.
    let out = run(
        a,
        &[
            "exec",
            "v2-basic",
            "sh",
            "-c",
            "echo in-$(hostname); exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("in-"),
        "{}",
        text(&out.stdout)
    );
    // ctr's own view through the shim: Pids.
    let ps = ctr(&["tasks", "ps", &id]);
    assert!(ps.contains(&pid.to_string()), "{ps}");
    ok(a, &["rm", "-f", "v2-basic"]);
    assert!(!ctr(&["tasks", "ls"]).contains(&id));
    assert!(!ctr(&["containers", "ls"]).contains(&id));
    let deadline = std::time::Instant::now() + LONG;
    while !shim_pids(&id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the shim of {id} stays"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn foreground_run_returns_the_exit_code_and_rm_leaves_nothing() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    let out = run(
        a,
        &[
            "run",
            "--rm",
            "--name",
            "v2-fg",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo hello-fg; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hello-fg"));
    assert!(!text(&a.run(&["ps", "-a"]).stdout).contains("v2-fg"));
    // A command that does not exist: 127 and a one-line error, nothing left behind.
    let out = run(
        a,
        &[
            "run",
            "--rm",
            "--name",
            "v2-nosuch",
            "--network",
            "none",
            IMAGE,
            "nosuch-cmd",
        ],
    );
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(!text(&a.run(&["ps", "-a"]).stdout).contains("v2-nosuch"));
}

#[test]
fn processes_that_exit_at_once_are_seen_exiting() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    // The exit can reach the shim before `runc start` returns.
    for i in 0..5 {
        let name = format!("v2-quick-{i}");
        let out = run(
            a,
            &[
                "run",
                "--rm",
                "--name",
                &name,
                "--network",
                "none",
                IMAGE,
                "true",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = run(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-quick-d",
            "--network",
            "none",
            IMAGE,
            "true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ok(a, &["wait", "v2-quick-d"]).trim(), "0");
    ok(a, &["rm", "v2-quick-d"]);
}

fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether containerd reports container `id`'s task as running.
fn ctr_running(id: &str) -> bool {
    ctr(&["tasks", "ls"])
        .lines()
        .any(|l| l.starts_with(id) && l.contains("RUNNING"))
}

/// Whether process `pid` runs (a zombie waiting for init to reap it does not).
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// The bundle's root file system is mounted.
fn rootfs_mounted(id: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.contains(&format!("/{id}/rootfs")))
}

#[test]
fn a_killed_shim_is_a_dead_container_or_a_restart_and_leaks_nothing() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    // No restart policy: the container dies with the shim, aac says so with SIGKILL's code.
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-kill",
            "--network",
            "none",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let id = id_of(a, "v2-kill");
    a.wait_for("v2-kill", LONG, "running", |v| {
        v["State"]["Running"] == true
    });
    let pid = state(a, "v2-kill")["Pid"].as_i64().unwrap();
    let shims = shim_pids(&id);
    assert_eq!(shims.len(), 1);
    kill9(shims[0]);
    let s = a.wait_for("v2-kill", LONG, "exited", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(s["State"]["ExitCode"], 137, "{}", s["State"]);
    assert!(!ctr_running(&id), "containerd still runs {id}");
    assert!(!alive(pid), "the container process {pid} outlived its shim");
    assert!(
        !rootfs_mounted(&id),
        "the root file system of {id} stays mounted"
    );
    ok(a, &["rm", "v2-kill"]);
    assert!(!ctr(&["containers", "ls"]).contains(&id));

    // restart always: a new task under a new shim, containerd and aac agree on its pid.
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-kill-r",
            "--restart",
            "always",
            "--network",
            "none",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let id = id_of(a, "v2-kill-r");
    a.wait_for("v2-kill-r", LONG, "running", |v| {
        v["State"]["Running"] == true
    });
    let first = state(a, "v2-kill-r")["Pid"].as_i64().unwrap();
    kill9(shim_pids(&id)[0]);
    let s = a.wait_for("v2-kill-r", LONG, "a restart", |v| {
        v["State"]["Running"] == true
            && v["State"]["RestartCount"].as_u64().unwrap_or(0) >= 1
            && v["State"]["Pid"].as_i64() != Some(first)
    });
    let pid = s["State"]["Pid"].as_i64().unwrap();
    let line = ctr(&["tasks", "ls"])
        .lines()
        .find(|l| l.starts_with(&id))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("RUNNING") && line.contains(&pid.to_string()),
        "ctr: {line:?}, aac: pid {pid}"
    );
    assert_eq!(shim_pids(&id).len(), 1);
    ok(a, &["rm", "-f", "v2-kill-r"]);
    assert!(!ctr(&["containers", "ls"]).contains(&id));
    assert!(!rootfs_mounted(&id));
}

#[test]
fn containerd_restarts_while_containers_run_under_the_aac_shim() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-ctrd",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 9' TERM; echo before; while true; do sleep 1; done",
        ],
    );
    let id = id_of(a, "v2-ctrd");
    a.wait_for("v2-ctrd", LONG, "running", |v| {
        v["State"]["Running"] == true
    });
    let pid = state(a, "v2-ctrd")["Pid"].as_i64().unwrap();
    let shim = shim_pids(&id);
    aac_tests::restart_containerd();
    // containerd reconnects to the same shim; the container never stopped.
    let line = ctr(&["tasks", "ls"])
        .lines()
        .find(|l| l.starts_with(&id))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("RUNNING") && line.contains(&pid.to_string()),
        "after the restart ctr says {line:?}"
    );
    assert_eq!(shim_pids(&id), shim, "the shim was replaced");
    assert!(alive(pid));
    let out = run(a, &["exec", "v2-ctrd", "echo", "still-here"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "still-here",
        "{}",
        text(&out.stderr)
    );
    // The monitor still follows the task: a stop is seen with the container's own code.
    ok(a, &["stop", "v2-ctrd"]);
    let s = a.wait_for("v2-ctrd", LONG, "exited", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(s["State"]["ExitCode"], 9, "{}", s["State"]);
    ok(a, &["rm", "v2-ctrd"]);
    assert!(!ctr(&["containers", "ls"]).contains(&id));
    assert!(!rootfs_mounted(&id));
}

/// The health status in `inspect` (its keys are `Status` or `status`).
fn health_is(v: &Value, want: &str) -> bool {
    let h = &v["State"]["Health"];
    h["Status"] == want || h["status"] == want
}

#[test]
fn health_checks_oom_kills_terminals_and_kill_under_the_aac_shim() {
    if !root() {
        return;
    }
    let _g = serial();
    let a = aac();
    // Health: probes run in the container through the shim's exec; `run -d` waits for the
    // first passing one.
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-health",
            "--network",
            "none",
            "--health-cmd",
            "test -f /tmp/ok && echo probe-ok",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "--health-start-period",
            "1s",
            IMAGE,
            "sh",
            "-c",
            "touch /tmp/ok; exec sleep 300",
        ],
    );
    let s = a.wait_for("v2-health", LONG, "healthy", |v| health_is(v, "healthy"));
    let h = &s["State"]["Health"];
    assert!(h.to_string().contains("probe-ok"), "{h}");
    ok(a, &["exec", "v2-health", "rm", "/tmp/ok"]);
    a.wait_for("v2-health", LONG, "unhealthy", |v| {
        health_is(v, "unhealthy")
    });
    // kill: the signal reaches the container's main process, aac sees the exit.
    ok(a, &["kill", "v2-health"]);
    let s = a.wait_for("v2-health", LONG, "exited", |v| {
        v["State"]["Status"] == "exited"
    });
    assert_eq!(s["State"]["ExitCode"], 137, "{}", s["State"]);
    ok(a, &["rm", "v2-health"]);

    // OOM: the kernel kills the process in the cgroup; aac reports it.
    ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            "v2-oom",
            "--network",
            "none",
            "--memory",
            "16m",
            IMAGE,
            "sh",
            "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(ok(a, &["wait", "v2-oom"]).trim(), "137");
    let s = state(a, "v2-oom");
    assert_eq!(s["OOMKilled"], true, "{s}");
    assert!(!ok(a, &["logs", "v2-oom"]).contains("survived"));
    ok(a, &["rm", "v2-oom"]);

    // A terminal: the shim receives runc's pty master and copies it to aac's FIFO.
    ok(
        a,
        &[
            "run",
            "-d",
            "-t",
            "--name",
            "v2-tty",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "test -t 1 && echo on-a-tty; exec sleep 300",
        ],
    );
    let deadline = std::time::Instant::now() + LONG;
    while !text(&a.run(&["logs", "v2-tty"]).stdout).contains("on-a-tty") {
        assert!(std::time::Instant::now() < deadline, "no tty output");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(a, &["rm", "-f", "v2-tty"]);
}
