//! docker's verbs end to end (issue 19): create/start, restart, pause/unpause, rename, port,
//! attach, cp, logs, prune, image verbs, login, system df/info, version, on the containerd
//! backend and the process backend, asserting what changed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc, cgroups)");
    false
}

/// Poll `f` until it returns `Some`, panicking with `what` after 20 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_lines(name: &str) -> Vec<String> {
    aac()
        .ok(&["logs", name])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The freezer state of `pid`'s cgroup: v1 `freezer.state`, or v2 `cgroup.freeze`.
fn freezer_state(pid: u64) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cg.lines() {
        let mut p = line.splitn(3, ':');
        let (_, ctrls, path) = (p.next(), p.next().unwrap(), p.next().unwrap());
        if ctrls.split(',').any(|c| c == "freezer") {
            let f = format!("/sys/fs/cgroup/freezer{path}/freezer.state");
            return std::fs::read_to_string(&f).unwrap().trim().to_string();
        }
    }
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a unified cgroup");
    for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let f = format!("{mount}{path}/cgroup.freeze");
        if let Ok(v) = std::fs::read_to_string(&f) {
            return if v.trim() == "1" { "FROZEN" } else { "THAWED" }.into();
        }
    }
    panic!("no freezer for pid {pid}: {cg}");
}

/// A container that prints a tick every 50 ms is frozen by `pause`: its cgroup says so, no
/// tick comes while it is paused, and ticks resume after `unpause`.
fn pause_stops_the_clock(name: &str, run: &[&str]) {
    let a = aac();
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(run);
    a.ok(&args);
    eventually("first ticks", || (log_lines(name).len() > 3).then_some(()));
    let pid = a.inspect(name)["State"]["Pid"].as_u64().unwrap();
    assert_eq!(freezer_state(pid), "THAWED");
    assert_eq!(a.ok(&["pause", name]).trim(), name);
    assert_eq!(freezer_state(pid), "FROZEN");
    let v = a.inspect(name);
    assert_eq!(v["State"]["Status"], "paused", "{}", v["State"]);
    assert_eq!(v["State"]["Paused"], true);
    // Pausing twice is refused.
    let out = a.run(&["pause", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already paused"),
        "{}",
        text(&out.stderr)
    );
    let frozen_at = log_lines(name).len();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(log_lines(name).len(), frozen_at, "ticks while paused");
    assert_eq!(a.ok(&["unpause", name]).trim(), name);
    assert_eq!(freezer_state(pid), "THAWED");
    eventually("ticks after unpause", || {
        (log_lines(name).len() > frozen_at + 2).then_some(())
    });
    let out = a.run(&["unpause", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not paused"),
        "{}",
        text(&out.stderr)
    );
    // A paused container still stops.
    a.ok(&["pause", name]);
    a.ok(&["stop", "-t", "1", name]);
    assert_eq!(a.inspect(name)["State"]["Status"], "exited");
    a.ok(&["rm", name]);
}

const TICKER: &str = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done";

#[test]
fn pause_freezes_a_containerd_container() {
    if !root() {
        return;
    }
    pause_stops_the_clock("paused-ctrd", &[IMAGE, "sh", "-c", TICKER]);
}

#[test]
fn pause_freezes_a_process_container() {
    if !root() {
        return;
    }
    pause_stops_the_clock("paused-proc", &["--runtime", "process", "sh", "-c", TICKER]);
}

#[test]
fn restart_keeps_the_name_and_counts() {
    if !root() {
        return;
    }
    let a = aac();
    for (name, run) in [
        ("restart-ctrd", vec![IMAGE]),
        ("restart-proc", vec!["--runtime", "process"]),
    ] {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(run);
        args.extend(["sh", "-c", "echo started; exec sleep 1000"]);
        a.ok(&args);
        let before = a.inspect(name);
        let pid = before["State"]["Pid"].as_u64().unwrap();
        assert_eq!(before["State"]["RestartCount"], 0);
        assert_eq!(a.ok(&["restart", "-t", "1", name]).trim(), name);
        let after = a.inspect(name);
        assert_eq!(after["Id"], before["Id"]);
        assert_eq!(after["Name"], format!("/{name}"));
        assert_eq!(after["State"]["Status"], "running", "{}", after["State"]);
        assert_eq!(after["State"]["RestartCount"], 1);
        let new_pid = after["State"]["Pid"].as_u64().unwrap();
        assert_ne!(new_pid, pid);
        assert!(Path::new(&format!("/proc/{new_pid}")).exists());
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                // The old PID may have been reused by an unrelated process: not ours then.
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.contains("sleep"))
                    .unwrap_or(true)
            }
        );
        eventually("the second start's output", || {
            (log_lines(name).iter().filter(|l| *l == "started").count() == 2).then_some(())
        });
        // A stopped one is started again by restart, and counted.
        a.ok(&["stop", "-t", "1", name]);
        a.ok(&["restart", name]);
        let v = a.inspect(name);
        assert_eq!(v["State"]["Status"], "running");
        assert_eq!(v["State"]["RestartCount"], 2);
        a.ok(&["rm", "-f", name]);
        assert!(a.run(&["inspect", name]).status.code() == Some(125));
    }
}

#[test]
fn create_then_start_attached() {
    if !root() {
        return;
    }
    let a = aac();
    for (name, run) in [
        ("created-ctrd", vec![IMAGE]),
        ("created-proc", vec!["--runtime", "process"]),
    ] {
        let mut args = vec!["create", "--name", name];
        args.extend(run);
        args.extend(["sh", "-c", "echo hello-$0; echo oops >&2; exit 3", "x"]);
        let id = a.ok(&args).trim().to_string();
        assert_eq!(id.len(), 64, "{id}");
        let v = a.inspect(name);
        assert_eq!(v["Id"], id);
        assert_eq!(v["State"]["Status"], "created");
        assert_eq!(v["State"]["Pid"], 0);
        let out = a.run(&["start", "-a", name]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hello-x\n");
        assert_eq!(text(&out.stderr), "oops\n");
        assert_eq!(a.inspect(name)["State"]["ExitCode"], 3);
        // An exited container starts again (detached: its name is printed).
        assert_eq!(a.ok(&["start", name]).trim(), name);
        assert_eq!(a.ok(&["wait", name]).trim(), "3");
        // Both runs' output, in the one log (stdout here, stderr apart).
        assert_eq!(log_lines(name), vec!["hello-x", "hello-x"]);
        a.ok(&["rm", name]);
    }
    let out = a.run(&["start", "no-such-container"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no-such-container"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn rename_frees_the_old_name() {
    if !root() {
        return;
    }
    let a = aac();
    let id = a
        .ok(&["run", "-d", "--name", "old-name", IMAGE, "sleep", "1000"])
        .trim()
        .to_string();
    a.ok(&["rename", "old-name", "new-name"]);
    let v = a.inspect("new-name");
    assert_eq!(v["Id"], id);
    assert_eq!(v["Name"], "/new-name");
    assert_eq!(a.run(&["inspect", "old-name"]).status.code(), Some(125));
    // The old name is free for another container; the new one is taken.
    let other = a
        .ok(&["run", "-d", "--name", "old-name", IMAGE, "sleep", "1000"])
        .trim()
        .to_string();
    assert_ne!(other, id);
    let out = a.run(&["rename", "old-name", "new-name"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("new-name"),
        "{}",
        text(&out.stderr)
    );
    let out = a.run(&["rename", "new-name", "bad/name"]);
    assert_eq!(out.status.code(), Some(125));
    // Names listed by ps follow.
    let ps = a.ok(&["ps"]);
    assert!(ps.contains("new-name") && ps.contains("old-name"), "{ps}");
    a.ok(&["rm", "-f", "new-name", "old-name"]);
}

fn http_get(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    Some(b)
}

#[test]
fn port_prints_what_answers() {
    if !root() {
        return;
    }
    let a = aac();
    let host_port = aac_tests::cli::free_port();
    let publish = format!("127.0.0.1:{host_port}:8080");
    a.ok(&[
        "run",
        "-d",
        "--name",
        "port-web",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-port > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let all = a.ok(&["port", "port-web"]);
    assert_eq!(all, format!("8080/tcp -> 127.0.0.1:{host_port}\n"));
    let one = a.ok(&["port", "port-web", "8080/tcp"]);
    let addr = one.trim().to_string();
    assert_eq!(addr, format!("127.0.0.1:{host_port}"));
    let body = eventually("the published port", || {
        http_get(&addr).filter(|b| b.contains("hello-port"))
    });
    assert!(body.contains("200"), "{body}");
    let out = a.run(&["port", "port-web", "9999"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no public port '9999/tcp'"),
        "{}",
        text(&out.stderr)
    );
    a.ok(&["rm", "-f", "port-web"]);
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(format!("/var/tmp/aac-verbs-{}/{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn sh(cmd: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

/// `cp` both ways and with tar streams keeps content and modes, on both backends.
#[test]
fn cp_round_trips_content_and_modes() {
    if !root() {
        return;
    }
    let a = aac();
    for (name, run) in [
        ("cp-ctrd", vec![IMAGE]),
        ("cp-proc", vec!["--runtime", "process"]),
    ] {
        let dir = scratch(name);
        let src = dir.join("payload");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
        std::fs::write(src.join("sub/run.sh"), "#!/bin/sh\necho run\n").unwrap();
        sh(&format!(
            "chmod 0640 {0}/a.txt && chmod 0755 {0}/sub/run.sh && chmod 0750 {0}/sub",
            src.display()
        ));
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(run);
        args.extend(["sleep", "1000"]);
        a.ok(&args);

        // host -> container, into an existing folder
        a.ok(&["cp", &src.to_string_lossy(), &format!("{name}:/tmp/")]);
        let seen = a.ok(&[
            "exec",
            name,
            "sh",
            "-c",
            "cat /tmp/payload/a.txt; stat -c '%a' /tmp/payload/a.txt /tmp/payload/sub /tmp/payload/sub/run.sh; /tmp/payload/sub/run.sh",
        ]);
        assert_eq!(seen, "alpha\n640\n750\n755\nrun\n");
        // The container's /tmp is its own: nothing landed on the host's.
        assert!(!Path::new("/tmp/payload").exists());

        // container -> host, as a new name
        let back = dir.join("back");
        a.ok(&[
            "cp",
            &format!("{name}:/tmp/payload"),
            &back.to_string_lossy(),
        ]);
        assert_eq!(
            std::fs::read_to_string(back.join("a.txt")).unwrap(),
            "alpha\n"
        );
        assert_eq!(mode_of(&back.join("a.txt")), 0o640);
        assert_eq!(mode_of(&back.join("sub")), 0o750);
        assert_eq!(mode_of(&back.join("sub/run.sh")), 0o755);
        // a single file over an existing one
        std::fs::write(dir.join("one.txt"), "old").unwrap();
        a.ok(&[
            "cp",
            &format!("{name}:/tmp/payload/a.txt"),
            &dir.join("one.txt").to_string_lossy(),
        ]);
        assert_eq!(
            std::fs::read_to_string(dir.join("one.txt")).unwrap(),
            "alpha\n"
        );

        // container -> tar on stdout
        let out = a.run(&["cp", &format!("{name}:/tmp/payload/sub"), "-"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::write(dir.join("sub.tar"), &out.stdout).unwrap();
        std::fs::create_dir(dir.join("untar")).unwrap();
        sh(&format!("tar -xpf {0}/sub.tar -C {0}/untar", dir.display()));
        assert_eq!(
            std::fs::read_to_string(dir.join("untar/sub/run.sh")).unwrap(),
            "#!/bin/sh\necho run\n"
        );
        assert_eq!(mode_of(&dir.join("untar/sub/run.sh")), 0o755);

        // tar on stdin -> container folder
        std::fs::write(dir.join("in.txt"), "from-stdin\n").unwrap();
        sh(&format!(
            "chmod 0604 {0}/in.txt && tar -cf {0}/in.tar -C {0} in.txt",
            dir.display()
        ));
        let tar = std::fs::File::open(dir.join("in.tar")).unwrap();
        let out = a
            .command(&["cp", "-", &format!("{name}:/tmp")])
            .stdin(tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let seen = a.ok(&[
            "exec",
            name,
            "sh",
            "-c",
            "cat /tmp/in.txt; stat -c '%a' /tmp/in.txt",
        ]);
        assert_eq!(seen, "from-stdin\n604\n");

        // Errors: a missing source, a stream into a file, a stopped container.
        let out = a.run(&["cp", &format!("{name}:/tmp/nope"), &dir.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("/tmp/nope"),
            "{}",
            text(&out.stderr)
        );
        let tar = std::fs::File::open(dir.join("in.tar")).unwrap();
        let out = a
            .command(&["cp", "-", &format!("{name}:/tmp/in.txt")])
            .stdin(tar)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125));
        a.ok(&["stop", "-t", "1", name]);
        let out = a.run(&["cp", &src.to_string_lossy(), &format!("{name}:/tmp/")]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            text(&out.stderr).contains("not running"),
            "{}",
            text(&out.stderr)
        );
        a.ok(&["rm", name]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn container_prune_removes_only_stopped_ones() {
    if !root() {
        return;
    }
    let a = aac();
    let exited = a
        .ok(&["run", "-d", "--name", "prune-exited", IMAGE, "true"])
        .trim()
        .to_string();
    assert_eq!(a.ok(&["wait", "prune-exited"]).trim(), "0");
    let created = a
        .ok(&[
            "create",
            "--name",
            "prune-created",
            "--runtime",
            "process",
            "true",
        ])
        .trim()
        .to_string();
    let running = a
        .ok(&[
            "run",
            "-d",
            "--name",
            "prune-running",
            IMAGE,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let out = a.ok(&["container", "prune", "-f"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("Deleted Containers:"), "{out}");
    let ids: Vec<&str> = lines.collect();
    assert!(ids.contains(&exited.as_str()), "{out}");
    assert!(ids.contains(&created.as_str()), "{out}");
    assert!(!ids.contains(&running.as_str()), "{out}");
    assert_eq!(a.run(&["inspect", "prune-exited"]).status.code(), Some(125));
    assert_eq!(
        a.run(&["inspect", "prune-created"]).status.code(),
        Some(125)
    );
    assert!(!a.record_ids().contains(&exited));
    assert_eq!(a.inspect("prune-running")["State"]["Status"], "running");
    // The names are free again.
    a.ok(&["create", "--name", "prune-exited", IMAGE, "true"]);
    a.ok(&["rm", "-f", "prune-running", "prune-exited"]);
}

#[test]
fn version_names_client_and_containerd() {
    if !root() {
        return;
    }
    let out = aac().ok(&["version"]);
    assert!(
        out.starts_with(&format!(
            "Client:\n Version:    {}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    let server = out.split("Server: containerd\n").nth(1).expect(&out);
    let v = server.lines().next().unwrap();
    assert!(v.starts_with(" Version:    "), "{out}");
    assert!(v.chars().any(|c| c.is_ascii_digit()), "{out}");
}

#[test]
fn image_tag_names_the_same_image() {
    if !root() {
        return;
    }
    let a = aac();
    assert_eq!(a.ok(&["image", "tag", IMAGE, "aac-busybox:tagged"]), "");
    // The new name runs what the old one holds.
    let out = a.ok(&["run", "--rm", "aac-busybox:tagged", "echo", "from-tag"]);
    assert_eq!(out, "from-tag\n");
    let list = a.ok(&["images"]);
    assert!(list.contains("tagged"), "{list}");
    let out = a.run(&["image", "tag", "no-such-image:1", "x:1"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no-such-image"),
        "{}",
        text(&out.stderr)
    );
    a.ok(&["image", "rm", "aac-busybox:tagged"]);
    // The original is untouched.
    assert_eq!(a.ok(&["run", "--rm", IMAGE, "echo", "still"]), "still\n");
}

/// `attach` shows what the container writes from then on (not what it wrote before), ends
/// with the container's exit code, and refuses a stopped container.
#[test]
fn attach_follows_output_from_now_and_returns_the_exit_code() {
    if !root() {
        return;
    }
    let a = aac();
    let marker = "/tmp/attached";
    a.ok(&[
        "run",
        "-d",
        "--name",
        "v-attach",
        IMAGE,
        "sh",
        "-c",
        &format!(
            "echo before; while [ ! -e {marker} ]; do echo tick; sleep 0.1; done; echo after-out; \
             echo after-err >&2; exit 7"
        ),
    ]);
    eventually("the first line", || {
        log_lines("v-attach")
            .iter()
            .any(|l| l == "before")
            .then_some(())
    });
    let mut child = a
        .command(&["attach", "v-attach"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once attach shows a tick it is following: let the container go on.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, "tick\n");
    // The container exits right after the marker: the exec still reports its own exit
    // (it is waited for from before it starts, not asked for once the task may be gone).
    a.ok(&["exec", "v-attach", "touch", marker]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    // Only what came after attaching: ticks, then the last line; never the first one.
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.last(), Some(&"after-out"), "{rest}");
    assert!(
        lines[..lines.len() - 1].iter().all(|l| *l == "tick"),
        "{rest}"
    );
    assert_eq!(text(&out.stderr), "after-err\n");
    let refused = a.run(&["attach", "v-attach"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("cannot attach to a stopped container"),
        "{}",
        text(&refused.stderr)
    );
    a.ok(&["rm", "v-attach"]);
}
