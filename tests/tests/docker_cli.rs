//! The docker command line people know, end to end through the `aac` binary on the private
//! containerd: `--format` templates, `inspect` in docker's shape, `ps --filter`/`-s`,
//! volumes, completions, and the flags and fixes of issue 19. Every assertion compares with
//! what the container itself shows or what `inspect` holds.

use std::time::Duration;

use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// Lines of `aac ARGS` stdout (must succeed).
fn lines(args: &[&str]) -> Vec<String> {
    aac().ok(args).lines().map(str::to_string).collect()
}

/// `aac ARGS` must fail with 125 and one clear line that contains `want`.
fn refused(args: &[&str], want: &str) {
    let out = aac().run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "aac {args:?}: {err}");
    assert!(err.contains(want), "aac {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "aac {args:?}: {err}");
}

#[test]
fn inspect_has_docker_shape_and_templates_read_it() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "dc-shape";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "-l",
        "team=blue",
        "-e",
        "GREETING=hi",
        "-p",
        "127.0.0.1::8080",
        IMAGE,
        "sleep",
        "300",
    ]);
    let v = a.wait_for(name, LONG, "running", |v| v["State"]["Status"] == "running");
    // docker's fields
    assert_eq!(v["Name"], format!("/{name}"));
    assert_eq!(v["State"]["Running"], true);
    assert_eq!(v["Config"]["Image"], IMAGE);
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["sleep", "300"]));
    assert_eq!(v["Config"]["Labels"]["team"], "blue");
    assert!(v["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("GREETING=hi")));
    assert_eq!(v["RestartCount"], 0);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "no");
    let pid = v["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);
    // ... and they are the container's: its pid runs `sleep 300`, its env holds GREETING
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(text(&cmdline).replace('\0', " ").trim(), "sleep 300");
    let env = a.ok(&["exec", name, "env"]);
    assert!(env.lines().any(|l| l == "GREETING=hi"), "{env}");
    // the address inside the container is NetworkSettings.IPAddress
    let ip = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!ip.is_empty(), "{}", v["NetworkSettings"]);
    let net = v["HostConfig"]["NetworkMode"].as_str().unwrap();
    assert_eq!(
        v["NetworkSettings"]["Networks"][net]["IPAddress"],
        ip.as_str()
    );
    let addrs = a.ok(&["exec", name, "ip", "-4", "addr"]);
    assert!(addrs.contains(&format!("inet {ip}/")), "{addrs}");
    let ports = &v["NetworkSettings"]["Ports"]["8080/tcp"][0];
    assert_eq!(ports["HostIp"], "127.0.0.1");
    let host_port = ports["HostPort"].as_str().unwrap().to_string();
    assert!(host_port.parse::<u16>().unwrap() > 0);

    // templates over the same fields
    let f = |t: &str| {
        a.ok(&["inspect", "--format", t, name])
            .trim_end()
            .to_string()
    };
    assert_eq!(f("{{.State.Status}}"), "running");
    assert_eq!(f("{{.State.Pid}}"), pid.to_string());
    assert_eq!(f("{{.Id}}"), v["Id"].as_str().unwrap());
    assert_eq!(f("{{.Name}}"), format!("/{name}"));
    assert_eq!(f("{{json .Config.Labels}}"), r#"{"team":"blue"}"#);
    assert_eq!(f("{{.NetworkSettings.IPAddress}}"), ip);
    assert_eq!(
        f("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"),
        ip
    );
    assert_eq!(
        f(
            r#"{{range $p, $conf := .NetworkSettings.Ports}}{{$p}} -> {{(index $conf 0).HostPort}}{{end}}"#
        ),
        format!("8080/tcp -> {host_port}")
    );
    assert_eq!(
        f(r#"{{if .State.Running}}up{{else}}down{{end}} {{.Config.Labels.team | upper}}"#),
        "up BLUE"
    );
    let j: Value = serde_json::from_str(&f("{{json .}}")).unwrap();
    assert_eq!(j["Id"], v["Id"]);
    assert_eq!(j["State"]["Pid"], v["State"]["Pid"]);
    let env_lines = f("{{range .Config.Env}}{{println .}}{{end}}");
    assert!(env_lines.lines().any(|l| l == "GREETING=hi"), "{env_lines}");

    // what the subset does not know is refused, clearly, before anything runs
    refused(
        &["inspect", "--format", "{{.Nope}}", name],
        "can't evaluate field Nope",
    );
    refused(
        &["inspect", "--format", "{{template \"x\"}}", name],
        "not supported",
    );
    refused(
        &["inspect", "--format", "{{frob .}}", name],
        "\"frob\" is not supported",
    );
    refused(&["inspect", "--format", "{{.State", name], "unclosed");

    // one missing name among several: the found ones print, exit 1
    let out = a.run(&["inspect", "--format", "{{.Name}}", name, "dc-no-such"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), format!("/{name}\n"));
    a.ok(&["rm", "-f", name]);
}

#[test]
fn ps_filters_and_formats() {
    if !root() {
        return;
    }
    let a = aac();
    for n in ["dc-ps-a", "dc-ps-b", "dc-ps-x"] {
        let _ = a.run(&["rm", "-f", n]);
    }
    a.ok(&[
        "run", "-d", "--name", "dc-ps-a", "-l", "tier=web", IMAGE, "sleep", "300",
    ]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "dc-ps-b",
        "-l",
        "tier=db",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        IMAGE,
        "sleep",
        "300",
    ]);
    let out = a.run(&[
        "run", "--name", "dc-ps-x", "-l", "tier=web", IMAGE, "sh", "-c", "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    a.wait_for("dc-ps-b", LONG, "healthy", |v| {
        v["State"]["Health"]["Status"] == "healthy"
    });
    let names = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["ps", "--format", "{{.Names}}"];
        args.extend_from_slice(extra);
        let mut l: Vec<String> = lines(&args)
            .into_iter()
            .filter(|n| n.starts_with("dc-ps-"))
            .collect();
        l.sort();
        l
    };
    assert_eq!(names(&[]), ["dc-ps-a", "dc-ps-b"]);
    assert_eq!(names(&["-a"]), ["dc-ps-a", "dc-ps-b", "dc-ps-x"]);
    assert_eq!(names(&["--filter", "label=tier=web"]), ["dc-ps-a"]);
    assert_eq!(
        names(&["-a", "--filter", "label=tier=web"]),
        ["dc-ps-a", "dc-ps-x"]
    );
    assert_eq!(names(&["--filter", "label=tier"]), ["dc-ps-a", "dc-ps-b"]);
    // a status filter looks at stopped containers without -a, as docker's does
    assert_eq!(names(&["--filter", "status=exited"]), ["dc-ps-x"]);
    assert_eq!(names(&["--filter", "exited=3"]), ["dc-ps-x"]);
    assert_eq!(names(&["-a", "--filter", "exited=0"]), Vec::<String>::new());
    assert_eq!(names(&["--filter", "health=healthy"]), ["dc-ps-b"]);
    assert_eq!(names(&["--filter", "health=none"]), ["dc-ps-a"]);
    assert_eq!(names(&["--filter", "name=ps-a"]), ["dc-ps-a"]);
    assert_eq!(names(&["-a", "--filter", "name=^dc-ps-x$"]), ["dc-ps-x"]);
    // same key twice: either; different keys: both
    assert_eq!(
        names(&["-a", "--filter", "name=ps-a", "--filter", "name=ps-x"]),
        ["dc-ps-a", "dc-ps-x"]
    );
    assert_eq!(
        names(&[
            "-a",
            "--filter",
            "label=tier=web",
            "--filter",
            "status=running"
        ]),
        ["dc-ps-a"]
    );
    assert_eq!(
        names(&["--filter", &format!("ancestor={IMAGE}")]),
        ["dc-ps-a", "dc-ps-b"]
    );
    assert_eq!(
        names(&["--filter", "ancestor=other:1"]),
        Vec::<String>::new()
    );
    refused(&["ps", "--filter", "colour=red"], "unknown key");
    refused(&["ps", "--filter", "status=sleepy"], "not one of");

    // the template fields are inspect's
    let row = a.ok(&[
        "ps",
        "--no-trunc",
        "--filter",
        "name=^dc-ps-a$",
        "--format",
        "{{.ID}}|{{.Image}}|{{.State}}|{{.Labels}}",
    ]);
    let v = a.inspect("dc-ps-a");
    assert_eq!(
        row.trim_end(),
        format!("{}|{}|running|tier=web", v["Id"].as_str().unwrap(), IMAGE)
    );
    let short = a.ok(&["ps", "--filter", "name=^dc-ps-a$", "--format", "{{.ID}}"]);
    assert_eq!(short.trim_end(), &v["Id"].as_str().unwrap()[..12]);
    let j: Value = serde_json::from_str(
        a.ok(&["ps", "--filter", "name=^dc-ps-a$", "--format", "{{json .}}"])
            .trim_end(),
    )
    .unwrap();
    assert_eq!(j["Names"], "dc-ps-a");
    assert_eq!(j["State"], "running");

    // table: docker's headings, cells aligned
    let t = lines(&[
        "ps",
        "-a",
        "--filter",
        "name=dc-ps-",
        "--format",
        "table {{.Names}}\\t{{.Status}}",
    ]);
    assert!(t[0].starts_with("NAMES"), "{t:?}");
    let col = t[0].find("STATUS").unwrap();
    assert_eq!(t.len(), 4, "{t:?}");
    for l in &t[1..] {
        assert!(l.starts_with("dc-ps-"), "{t:?}");
        assert_eq!(l[col - 1..col].trim(), "", "{t:?}");
        assert!(!l[col..].starts_with(' '), "{t:?}");
    }
    // `json` stays the array it was
    let arr: Value = serde_json::from_str(&a.ok(&["ps", "-a", "--format", "json"])).unwrap();
    assert!(arr
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["Names"] == "dc-ps-x"));

    for n in ["dc-ps-a", "dc-ps-b", "dc-ps-x"] {
        a.ok(&["rm", "-f", n]);
    }
}

/// docker's human sizes (`2.1MB`) as bytes.
fn bytes_of(s: &str) -> f64 {
    let num: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let unit = &s[num.len()..];
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("size {s:?}"));
    n * match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other:?} in {s:?}"),
    }
}

#[test]
fn ps_size_counts_the_writable_layer() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "dc-size";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "300"]);
    let size = |a: &aac_tests::cli::Aac| -> (f64, f64) {
        let s = a.ok(&[
            "ps",
            "-s",
            "--filter",
            "name=^dc-size$",
            "--format",
            "{{.Size}}",
        ]);
        // "2.1MB (virtual 7.3MB)"
        let s = s.trim_end();
        let (rw, virt) = s
            .split_once(" (virtual ")
            .unwrap_or_else(|| panic!("{s:?}"));
        (bytes_of(rw), bytes_of(virt.trim_end_matches(')')))
    };
    let (before, virt_before) = size(a);
    a.ok(&[
        "exec",
        name,
        "dd",
        "if=/dev/zero",
        "of=/big",
        "bs=1024",
        "count=3000",
    ]);
    let (after, virt_after) = size(a);
    assert!(after - before >= 3e6, "{before} -> {after}");
    assert!(virt_after > after && virt_before > before);
    assert!(virt_after - virt_before >= 3e6);
    let table = a.ok(&["ps", "-s", "--filter", "name=^dc-size$"]);
    assert!(table.lines().next().unwrap().contains("SIZE"), "{table}");
    a.ok(&["rm", "-f", name]);
}

#[test]
fn list_commands_take_templates() {
    if !root() {
        return;
    }
    let a = aac();
    let imgs = lines(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(imgs.iter().any(|l| l == IMAGE), "{imgs:?}");
    let t = lines(&["images", "--format", "table {{.Repository}}\\t{{.Tag}}"]);
    assert!(t[0].starts_with("REPOSITORY"), "{t:?}");
    a.ok(&["network", "create", "dc-net"]);
    let nets = lines(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.iter().any(|l| l == "dc-net bridge"), "{nets:?}");
    a.ok(&["network", "rm", "dc-net"]);

    let name = "dc-stats";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "300"]);
    let s = lines(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        name,
    ]);
    assert_eq!(s, [format!("{name} 1")]);
    let s = lines(&[
        "stats",
        "--no-stream",
        "--format",
        "table {{.Name}}\\t{{.PIDs}}",
        name,
    ]);
    assert!(s[0].starts_with("NAME") && s[0].contains("PIDS"), "{s:?}");
    refused(
        &["stats", "--no-stream", "--format", "{{.Nope}}", name],
        "Nope",
    );
    a.ok(&["rm", "-f", name]);
}

#[test]
fn named_volumes_are_shared_and_kept_while_used() {
    if !root() {
        return;
    }
    let a = aac();
    for n in ["dc-vol-w", "dc-vol-r", "dc-vol-p"] {
        let _ = a.run(&["rm", "-f", n]);
    }
    let _ = a.run(&["volume", "rm", "-f", "dc-data"]);
    assert_eq!(
        a.ok(&["volume", "create", "-l", "team=blue", "dc-data"])
            .trim(),
        "dc-data"
    );
    let v: Value = serde_json::from_str(&a.ok(&["volume", "inspect", "dc-data"])).unwrap();
    assert_eq!(v[0]["Name"], "dc-data");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Labels"]["team"], "blue");
    let mountpoint = v[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        a.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            "dc-data"
        ])
        .trim(),
        mountpoint
    );
    assert!(lines(&["volume", "ls", "-q"]).contains(&"dc-data".to_string()));
    assert!(
        lines(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"])
            .contains(&"dc-data local".to_string())
    );
    assert!(lines(&["volume", "ls", "-q", "--filter", "label=team=blue"]) == ["dc-data"]);

    // one container writes, another (on the process backend too) reads
    a.ok(&[
        "run",
        "--name",
        "dc-vol-w",
        "-v",
        "dc-data:/data",
        IMAGE,
        "sh",
        "-c",
        "echo shared > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/f")).unwrap(),
        "shared\n"
    );
    let out = a.ok(&[
        "run",
        "--rm",
        "-v",
        "dc-data:/data:ro",
        IMAGE,
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "shared\n");
    let out = a.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "-v",
        "dc-data:/data",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "shared\n");
    // inspect's Mounts name it
    let m = &a.inspect("dc-vol-w")["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], "dc-data");
    assert_eq!(m["Source"], mountpoint.as_str());
    assert_eq!(m["Destination"], "/data");

    // in use by a stopped container: refused, and the data stays
    // docker's exit code for a verb that failed on one of its operands: 1
    let out = a.run(&["volume", "rm", "dc-data"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use by container dc-vol-w"),
        "{}",
        text(&out.stderr)
    );
    assert!(std::path::Path::new(&format!("{mountpoint}/f")).exists());
    let out = a.run(&["volume", "prune", "-f", "--all"]);
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("dc-data"),
        "{}",
        text(&out.stdout)
    );
    assert!(std::path::Path::new(&mountpoint).exists());
    a.ok(&["rm", "dc-vol-w"]);
    assert_eq!(a.ok(&["volume", "rm", "dc-data"]).trim(), "dc-data");
    assert!(!std::path::Path::new(&mountpoint).exists());
    refused(&["volume", "inspect", "dc-data"], "no such volume");
    // -f: a missing volume is no error
    a.ok(&["volume", "rm", "-f", "dc-data"]);
    refused(&["volume", "create", "../escape"], "not a volume name");

    // agent.yaml `type: volume` uses the same volumes
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: dc-vol-p\nspec:\n  image: {IMAGE}\n  command: [sh, -c, 'echo from-yaml > /cache/y']\n  volumes:\n    - type: volume\n      source: dc-yaml\n      target: /cache\n"
        ),
    )
    .unwrap();
    a.ok(&["up", &dir.path().to_string_lossy()]);
    let mp = a.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "dc-yaml"]);
    assert_eq!(
        std::fs::read_to_string(format!("{}/y", mp.trim())).unwrap(),
        "from-yaml\n"
    );
    a.ok(&["rm", "-f", "dc-vol-p"]);
    a.ok(&["volume", "rm", "dc-yaml"]);
}

#[test]
fn anonymous_volumes_and_mount_order() {
    if !root() {
        return;
    }
    let a = aac();
    let _ = a.run(&["rm", "-f", "dc-anon"]);
    // `-v /foo`: a fresh volume of its own
    a.ok(&[
        "run",
        "--name",
        "dc-anon",
        "-v",
        "/scratch",
        IMAGE,
        "sh",
        "-c",
        "echo x > /scratch/f; grep -c ' /scratch ' /proc/mounts",
    ]);
    let m = &a.inspect("dc-anon")["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    let name = m["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64, "{m}");
    let v: Value = serde_json::from_str(&a.ok(&["volume", "inspect", &name])).unwrap();
    assert_eq!(v[0]["Anonymous"], true);
    // `rm -v` takes it along
    a.ok(&["rm", "-v", "dc-anon"]);
    refused(&["volume", "inspect", &name], "no such volume");
    // `--rm` too
    let before = lines(&["volume", "ls", "-q"]);
    a.ok(&["run", "--rm", "-v", "/scratch", IMAGE, "true"]);
    assert_eq!(lines(&["volume", "ls", "-q"]), before);

    // docker sorts mounts by depth: the deeper bind shows through the volume above it
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("inner"), "bind-file\n").unwrap();
    let _ = a.run(&["volume", "rm", "-f", "dc-outer"]);
    let bind = format!("{}:/a/b", host.path().display());
    let out = a.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "-v",
        "dc-outer:/a",
        IMAGE,
        "cat",
        "/a/b/inner",
    ]);
    assert_eq!(out, "bind-file\n");
    a.ok(&["volume", "rm", "dc-outer"]);
}

#[test]
fn exec_env_user_and_detach() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "dc-exec";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "300"]);
    // `-e KEY`: the value from aac's environment; unset there, not set inside
    let out = a
        .command(&[
            "exec",
            "-e",
            "DC_FROM_HOST",
            "-e",
            "DC_UNSET_HERE",
            "-e",
            "DC_SET=x",
            name,
            "sh",
            "-c",
            "echo \"$DC_FROM_HOST|$DC_SET|${DC_UNSET_HERE-unset}\"",
        ])
        .env("DC_FROM_HOST", "from-host")
        .env_remove("DC_UNSET_HERE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-host|x|unset\n");
    // --user UID:GID
    assert_eq!(
        a.ok(&[
            "exec",
            "--user",
            "1234:5678",
            name,
            "sh",
            "-c",
            "echo $(id -u):$(id -g)"
        ]),
        "1234:5678\n"
    );
    // -d returns before the command ends; the command still runs to its end
    a.ok(&[
        "exec",
        "-d",
        name,
        "sh",
        "-c",
        "sleep 1; echo done > /tmp/bg",
    ]);
    let first = a.run(&["exec", name, "cat", "/tmp/bg"]);
    assert!(
        !first.status.success(),
        "the background command finished before -d returned"
    );
    let mut tries = 0;
    while !a
        .run(&["exec", name, "test", "-f", "/tmp/bg"])
        .status
        .success()
    {
        tries += 1;
        assert!(tries < 300, "exec -d never ran its command");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.ok(&["exec", name, "cat", "/tmp/bg"]), "done\n");
    refused(&["exec", "-d", "-i", name, "true"], "-d");
    a.ok(&["rm", "-f", name]);
}

#[test]
fn stop_signal_and_wait_conditions() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "dc-sig";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got-int; exit 7' INT; echo ready; while true; do sleep 0.1; done",
    ]);
    a.wait_for(name, LONG, "ready", |_| {
        a.ok(&["logs", name]).contains("ready")
    });
    a.ok(&["stop", "--signal", "INT", "-t", "30", name]);
    let v = a.inspect(name);
    assert_eq!(v["State"]["ExitCode"], 7, "{}", v["State"]);
    assert!(a.ok(&["logs", name]).contains("got-int"));
    refused(&["stop", "--signal", "NOPE", name], "NOPE");
    a.ok(&["rm", name]);

    // wait returns the first exit code while a restart policy keeps restarting it
    let name = "dc-wait";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 4",
    ]);
    assert_eq!(a.ok(&["wait", name]).trim(), "4");
    assert_eq!(
        a.ok(&["wait", "--condition", "next-exit", name]).trim(),
        "4"
    );
    let v = a.inspect(name);
    assert!(v["RestartCount"].as_u64().unwrap() >= 1, "{}", v["State"]);
    // removed: ends once the container is gone
    let mut waiter = a
        .command(&["wait", "--condition", "removed", name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait --condition removed ended early"
    );
    a.ok(&["rm", "-f", name]);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    refused(
        &["wait", "--condition", "sometime", "dc-x"],
        "not a wait condition",
    );
}

#[test]
fn tmpfs_on_dev_shm_replaces_the_default() {
    if !root() {
        return;
    }
    let out = aac().ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/dev/shm:size=1m",
        IMAGE,
        "sh",
        "-c",
        "grep -c ' /dev/shm ' /proc/mounts; grep ' /dev/shm ' /proc/mounts",
    ]);
    let mut l = out.lines();
    assert_eq!(l.next(), Some("1"), "{out}");
    assert!(l.next().unwrap().contains("size=1024k"), "{out}");
    // the default is still there without the flag
    let out = aac().ok(&["run", "--rm", IMAGE, "grep", " /dev/shm ", "/proc/mounts"]);
    assert!(out.contains("size=65536k"), "{out}");
}

#[test]
fn run_detached_that_never_turns_healthy_leaves_nothing() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "dc-unhealthy";
    let _ = a.run(&["rm", "-f", name]);
    let out = a.run(&[
        "run",
        "-d",
        "--name",
        name,
        "--health-cmd",
        "echo not-yet; exit 1",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("did not become healthy") && err.contains("removed"),
        "{err}"
    );
    let out = a.run(&["inspect", name]);
    assert!(!out.status.success(), "{name} is still there");
    // its name is free again
    a.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "1"]);
    a.ok(&["rm", "-f", name]);
}

#[test]
fn cap_add_all_means_what_this_host_allows() {
    if !root() {
        return;
    }
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let s = aac().ok(&[
        "run",
        "--rm",
        "--cap-add",
        "ALL",
        IMAGE,
        "cat",
        "/proc/self/status",
    ]);
    let eff = s
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    // every capability the host has, and none it lacks
    assert_eq!(
        u64::from_str_radix(eff, 16).unwrap(),
        u64::from_str_radix(&bnd, 16).unwrap(),
        "CapEff {eff} vs the host's CapBnd {bnd}"
    );
}

#[test]
fn completions_load_in_bash_and_man_pages_render() {
    let bin = aac_tests::cli::bin("aac");
    let bin = bin.to_string_lossy();
    let script = format!(
        "source <('{bin}' completion bash) && complete -p aac && \
         COMP_WORDS=(aac volu) COMP_CWORD=1 && _aac aac volu aac && echo \"words: ${{COMPREPLY[*]}}\""
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert!(
        so.lines().next().unwrap().starts_with("complete ") && so.contains(" aac"),
        "{so}"
    );
    assert!(so.contains("words: volume"), "{so}");
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(&*bin)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("volume"), "{shell}");
    }
    let out = std::process::Command::new(&*bin)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&*bin)
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let top = std::fs::read_to_string(dir.path().join("aac.1")).unwrap();
    assert!(top.contains(".TH aac 1"), "{}", &top[..200.min(top.len())]);
    let page = std::fs::read_to_string(dir.path().join("aac-volume-create.1")).unwrap();
    assert!(page.contains("label"), "{page}");
}

/// Run `aac ARGS` with `input` on stdin; None when it has not ended after a minute (killed).
fn with_stdin(args: &[&str], input: &str) -> Option<std::process::Output> {
    use std::io::Write as _;
    let mut child = aac()
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // stdin is closed here: the container's must see end-of-file
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn piped_stdin_ends_in_run_and_exec() {
    if !root() {
        return;
    }
    let out = with_stdin(&["run", "--rm", "-i", IMAGE, "cat"], "x\ny\n")
        .expect("`echo x | aac run -i IMG cat` never ended");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "x\ny\n");
    let out = with_stdin(&["run", "--rm", "-i", IMAGE, "wc", "-l"], "1\n2\n3\n")
        .expect("run -i wc never ended");
    assert_eq!(text(&out.stdout).trim(), "3");

    let a = aac();
    let name = "dc-stdin";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&["run", "-d", "--name", name, IMAGE, "sleep", "300"]);
    let out = with_stdin(&["exec", "-i", name, "cat"], "through exec\n")
        .expect("`aac exec -i NAME cat` never ended");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "through exec\n");
    a.ok(&["rm", "-f", name]);
}

/// The output of the first health probe of a fresh container.
fn first_probe_output(extra: &[&str], name: &str) -> String {
    let a = aac();
    let _ = a.run(&["rm", "-f", name]);
    let mut args = vec![
        "run",
        "-d",
        "--no-wait",
        "--name",
        name,
        "--health-interval",
        "1s",
        "--health-cmd",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    ];
    args.extend_from_slice(extra);
    a.ok(&args);
    let v = a.wait_for(name, LONG, "a probe result", |v| {
        v["State"]["Health"]["Log"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    a.ok(&["rm", "-f", name]);
    v["State"]["Health"]["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn health_output_keeps_the_order_of_stdout_and_stderr() {
    if !root() {
        return;
    }
    let want = "out1\nerr1\nout2\nerr2\n";
    assert_eq!(
        first_probe_output(&[IMAGE, "sleep", "300"], "dc-hc-order"),
        want
    );
    assert_eq!(
        first_probe_output(&["--runtime", "process", "sleep", "300"], "dc-hc-order-p"),
        want
    );
}

#[test]
fn names_resolve_as_name_and_name_dot_network() {
    if !root() {
        return;
    }
    let a = aac();
    for n in ["dc-dns-a", "dc-dns-b"] {
        let _ = a.run(&["rm", "-f", n]);
    }
    let _ = a.run(&["network", "rm", "dc-dnsnet"]);
    a.ok(&["network", "create", "dc-dnsnet"]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "dc-dns-a",
        "--network",
        "dc-dnsnet",
        IMAGE,
        "sleep",
        "300",
    ]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "dc-dns-b",
        "--network",
        "dc-dnsnet",
        IMAGE,
        "sleep",
        "300",
    ]);
    let ip_a = a.inspect("dc-dns-a")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["dc-dns-a", "dc-dns-a.dc-dnsnet"] {
        let out = a.ok(&["exec", "dc-dns-b", "ping", "-c", "1", "-W", "5", name]);
        assert!(
            out.contains(&format!("({ip_a})")) || out.contains(&ip_a),
            "{name}: {out}"
        );
    }
    // and the other way round (the earlier container's hosts file was updated)
    let ip_b = a.inspect("dc-dns-b")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let out = a.ok(&[
        "exec",
        "dc-dns-a",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "dc-dns-b.dc-dnsnet",
    ]);
    assert!(out.contains(&ip_b), "{out}");
    for n in ["dc-dns-a", "dc-dns-b"] {
        a.ok(&["rm", "-f", n]);
    }
    a.ok(&["network", "rm", "dc-dnsnet"]);
}

#[test]
fn mount_long_form_end_to_end() {
    if !root() {
        return;
    }
    let a = aac();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "bound\n").unwrap();
    let bind = format!(
        "type=bind,source={},target=/b,readonly",
        host.path().display()
    );
    let _ = a.run(&["volume", "rm", "-f", "dc-mnt"]);
    let out = a.ok(&[
        "run",
        "--rm",
        "--mount",
        &bind,
        "--mount",
        "type=volume,source=dc-mnt,target=/v",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1048576",
        IMAGE,
        "sh",
        "-c",
        "cat /b/f; touch /b/x 2>/dev/null && echo writable || echo read-only; echo v > /v/f; \
         grep ' /t ' /proc/mounts | grep -o 'size=[0-9]*k'",
    ]);
    assert_eq!(out, "bound\nread-only\nsize=1024k\n");
    let mp = a.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "dc-mnt"]);
    assert_eq!(
        std::fs::read_to_string(format!("{}/f", mp.trim())).unwrap(),
        "v\n"
    );
    a.ok(&["volume", "rm", "dc-mnt"]);
    refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=nfs,target=/x",
            IMAGE,
            "true",
        ],
        "type=nfs",
    );
}
