//! The `aac` binary end to end on a private containerd: what is observed inside the
//! container, exit codes, and that nothing is left behind.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, free_port, text};
use aac_tests::{leftovers, IMAGE};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{key} missing from:\n{status}"))
}

#[test]
fn exit_code_and_streams_come_through() {
    if !root() {
        return;
    }
    let out = aac().run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "to-out\n");
    assert_eq!(text(&out.stderr), "to-err\n");
}

#[test]
fn default_security_seen_from_inside() {
    if !root() {
        return;
    }
    let s = aac().ok(&["run", "--rm", IMAGE, "cat", "/proc/self/status"]);
    assert_eq!(status_field(&s, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&s, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&s, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(&s, "NoNewPrivs"), "1");
    assert_eq!(status_field(&s, "Seccomp"), "2");

    let s = aac().ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        IMAGE,
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(status_field(&s, "CapEff"), "0000000000000400");
    assert_eq!(status_field(&s, "CapBnd"), "0000000000000400");

    // The default profile refuses what moby's refuses: unshare of a user namespace.
    let out = aac().run(&["run", "--rm", IMAGE, "unshare", "-U", "true"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "unshare -U worked under seccomp"
    );
    // and --security-opt seccomp=unconfined lifts the filter
    let s = aac().ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        IMAGE,
        "cat",
        "/proc/self/status",
    ]);
    assert_eq!(status_field(&s, "Seccomp"), "0");
}

#[test]
fn limits_land_in_the_cgroup_files() {
    if !root() {
        return;
    }
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max; \
                  cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max";
    let out = aac().ok(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "32",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["67108864", "50000", "32"], "{out}");
}

#[test]
fn read_only_root_user_hostname_env_volumes() {
    if !root() {
        return;
    }
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("seen.txt"), "from-host\n").unwrap();
    let vol = format!("{}:/data", host_dir.path().display());
    let out = aac().run(&[
        "run",
        "--rm",
        "--read-only",
        "--hostname",
        "agent-one",
        "-e",
        "GREETING=hi there",
        "-v",
        &vol,
        "--tmpfs",
        "/scratch",
        "--user",
        "65534:65534",
        IMAGE,
        "sh",
        "-c",
        "touch /rootfile 2>/dev/null && echo root-writable; touch /tmp/t && echo tmp-ok; \
         echo ok > /scratch/x && echo scratch-ok; cat /data/seen.txt; hostname; echo \"$GREETING\"; id -u; id -g",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "tmp-ok",
            "scratch-ok",
            "from-host",
            "agent-one",
            "hi there",
            "65534",
            "65534"
        ]
    );
}

#[test]
fn command_failures_have_docker_codes_and_leave_nothing() {
    if !root() {
        return;
    }
    let cases: [(&[&str], i32); 3] = [
        (
            &[
                "run",
                "--rm",
                "--name",
                "fail-127",
                IMAGE,
                "no-such-command",
            ],
            127,
        ),
        (&["run", "--name", "fail-126", IMAGE, "/bin/notexec"], 126),
        (
            &["run", "--name", "fail-125", "aac-busybox:missing", "true"],
            125,
        ),
    ];
    for (args, code) in cases {
        let out = aac().run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = aac().run(&["run", "aac-busybox:missing", "true"]);
    assert!(
        text(&out.stderr).contains("image 'aac-busybox:missing' not found locally"),
        "{}",
        text(&out.stderr)
    );
    // No record or name was left by the failures...
    for name in ["fail-127", "fail-126", "fail-125"] {
        let out = aac().run(&["inspect", name]);
        assert!(!out.status.success(), "{name} is still known");
        assert!(!aac().data_dir.join("names").join(name).exists());
    }
    // ...and containerd holds nothing aac has no record of: no container, no snapshot
    // of its own, no lease.
    let records = aac().record_ids();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = aac_tests::client().await;
        for c in client.list_containers().await.unwrap() {
            if c.id.len() == 64 {
                assert!(
                    records.contains(&c.id),
                    "containerd holds unknown container {}",
                    c.id
                );
            }
        }
        for (lease, labels) in client.list_leases().await.unwrap() {
            if let Some(owner) = labels.get("aac.dev/for") {
                assert!(
                    records.contains(owner),
                    "lease {lease} of {owner} left behind"
                );
            }
        }
    });
}

#[test]
fn detached_lifecycle_ps_logs_stop_rm() {
    if !root() {
        return;
    }
    let a = aac();
    let id = a
        .ok(&[
            "run",
            "-d",
            "--name",
            "lifecycle",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    a.wait_for("lifecycle", Duration::from_secs(10), "output", |_| {
        a.ok(&["logs", "lifecycle"]).contains("started")
    });
    let ps = a.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.contains("lifecycle"))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(line.contains(&id[..12]) && line.contains("Up "), "{line}");
    assert!(a.ok(&["ps", "-q"]).contains(&id[..12]));
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["ps", "--format", "json"])).unwrap();
    assert!(json
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["Names"] == "lifecycle" && c["State"] == "running"));
    // exec in the running container
    assert_eq!(a.ok(&["exec", "lifecycle", "hostname"]).trim(), "lifecycle");
    let out = a.run(&["exec", "lifecycle", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));

    a.ok(&["stop", "-t", "5", "lifecycle"]);
    let v = a.inspect("lifecycle");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 0);
    assert!(a.ok(&["logs", "lifecycle"]).contains("bye"));
    let ps = a.ok(&["ps", "-a"]);
    assert!(
        ps.lines()
            .any(|l| l.contains("lifecycle") && l.contains("Exited (0)")),
        "{ps}"
    );
    assert!(!a.ok(&["ps"]).contains("lifecycle"));
    a.ok(&["rm", "lifecycle"]);
    assert!(!a.ok(&["ps", "-a"]).contains("lifecycle"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let l = leftovers(&aac_tests::client().await, &id).await;
        assert!(l.containers.is_empty() && l.snapshots.is_empty() && l.leases.is_empty());
    });
}

#[test]
fn one_name_one_container_under_concurrency() {
    if !root() {
        return;
    }
    let a = aac();
    let children: Vec<_> = (0..4)
        .map(|_| {
            a.command(&["run", "-d", "--name", "only-one", IMAGE, "sleep", "30"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(winners, 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            text(&o.stderr).contains("already in use"),
            "{}",
            text(&o.stderr)
        );
    }
    a.ok(&["rm", "-f", "only-one"]);
}

#[test]
fn published_port_answers() {
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
        "web",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok(b)
        });
        match got {
            Ok(b) if b.contains("hello-from-web") => break b,
            _ if Instant::now() > deadline => panic!("port {port} never answered: {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(
        body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200"),
        "{body}"
    );
    // The port is taken now: a second agent on it is refused before anything is created.
    let out = a.run(&["run", "-d", "-p", &publish, IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains(&format!("port {port} is already in use")),
        "{}",
        text(&out.stderr)
    );
    a.ok(&["rm", "-f", "web"]);
}

#[test]
fn signals_are_forwarded_in_the_foreground() {
    if !root() {
        return;
    }
    let mut child = aac()
        .command(&[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("ready") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "aac ended before the container was ready: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(rest.contains("got-int"), "{rest}");
}

#[test]
fn interactive_terminal() {
    if !root() {
        return;
    }
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = aac()
        .command(&["run", "--rm", "-i", "-t", IMAGE, "sh"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reader = {
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut all = String::new();
            let mut buf = [0u8; 1024];
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                if all.contains("sum=42") {
                    break;
                }
            }
            all
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(b"echo sum=$((40+2))\n").unwrap();
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if reader.is_finished() {
        seen = reader.join().unwrap();
    }
    assert!(seen.contains("sum=42"), "terminal showed: {seen:?}");
    master.write_all(b"exit 5\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "aac -it did not end after exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(5));
}

#[test]
fn up_runs_an_agent_yaml() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: yaml-agent\nspec:\n  image: {IMAGE}\n  command: [sh, -c, 'echo \"$MODEL_NAME\"; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max']\n  config:\n    model: gpt-4\n  environment:\n    - name: MODEL_NAME\n      from: config\n      key: model\n  resources:\n    limits:\n      pids: 50\n  network:\n    mode: none\n"
        ),
    )
    .unwrap();
    let out = aac().ok(&["up", "--rm", &dir.path().to_string_lossy()]);
    assert_eq!(out, "gpt-4\n50\n");
}
