//! `aac system check` against facts read independently from the kernel, `aac system
//! setup-rootless` on a throw-away user, and the runc options of the systemd cgroup driver.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aac_tests::cli::{aac, bin, text};
use aac_tests::{env, IMAGE};
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

fn check_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "aac system check: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

/// `(fstype, mount point, super options)` of every cgroup mount in /proc/self/mountinfo.
fn cgroup_mounts() -> Vec<(String, PathBuf, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1)?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| (fstype.to_string(), PathBuf::from(mp), opts.to_string()))
        })
        .collect()
}

/// The v1 mount point of `controller`, if it is mounted as v1.
fn v1_mount(controller: &str) -> Option<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .find(|(t, _, o)| t == "cgroup" && o.split(',').any(|c| c == controller))
        .map(|(_, p, _)| p)
}

fn cap_eff_has(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let v = u64::from_str_radix(hex, 16).unwrap();
    v & (1 << bit) != 0
}

#[test]
fn check_reports_what_the_kernel_says() {
    let v = check_json(&mut aac().command(&["system", "check", "--format", "json"]));

    // cgroup mode from the mount table
    let mounts = cgroup_mounts();
    let v1 = mounts.iter().any(|(t, _, _)| t == "cgroup");
    let v2 = mounts.iter().any(|(t, _, _)| t == "cgroup2");
    let mode = match (v1, v2) {
        (false, _) => "unified",
        (true, true) => "hybrid",
        (true, false) => "legacy",
    };
    assert_eq!(v["cgroup"]["mode"], mode, "{:#}", v["cgroup"]);
    if v1 {
        for c in ["memory", "pids"] {
            let listed = v["cgroup"]["controllers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == c);
            assert_eq!(listed, v1_mount(c).is_some(), "{c}: {:#}", v["cgroup"]);
        }
    }

    // CNI plugins: found exactly where the files are
    for p in ["bridge", "host-local", "portmap", "firewall"] {
        let file = ["/usr/lib/cni", "/opt/cni/bin"]
            .iter()
            .map(|d| Path::new(d).join(p))
            .find(|f| f.is_file());
        match file {
            Some(f) => assert_eq!(v["cni"]["found"][p], f.to_string_lossy().as_ref(), "{p}"),
            None => {
                assert!(v["cni"]["found"].get(p).is_none(), "{p}");
                assert!(v["cni"]["missing"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m == p));
            }
        }
    }

    // the private test containerd answers at the address aac uses
    assert_eq!(
        v["containerd"]["address"],
        env().socket.to_string_lossy().as_ref()
    );
    assert_eq!(v["containerd"]["reachable"], true, "{:#}", v["containerd"]);
    assert!(!v["containerd"]["version"].as_str().unwrap().is_empty());
    assert_eq!(v["auto_backend"]["backend"], "containerd");

    // CAP_SYS_RESOURCE is bit 24 of CapEff; the nofile hard limit is ours
    assert_eq!(v["resources"]["cap_sys_resource"], cap_eff_has(24));
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert_eq!(v["resources"]["nofile_hard"], hard);

    // seccomp and user namespaces
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        v["seccomp"]["supported"],
        status.lines().any(|l| l.starts_with("Seccomp:"))
    );
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let listed: Vec<&str> = v["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(listed, actions.split_whitespace().collect::<Vec<_>>());
    let max_userns: u64 = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(v["user_namespaces"]["max_user_namespaces"], max_userns);
    assert_eq!(v["user"]["uid"], nix::unistd::geteuid().as_raw());

    // every line has an item, a state and an action; the table prints them all
    let items = v["items"].as_array().unwrap();
    assert!(items.len() >= 10);
    let table = aac().ok(&["system", "check"]);
    for i in items {
        assert!(!i["state"].as_str().unwrap().is_empty());
        assert!(!i["action"].as_str().unwrap().is_empty());
        assert!(
            table.contains(i["item"].as_str().unwrap()),
            "{} not in:\n{table}",
            i["item"]
        );
    }
}

#[test]
fn check_without_containerd_picks_the_process_backend() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let mut cmd = aac().command(&["system", "check", "--format", "json"]);
    cmd.env("CONTAINERD_ADDRESS", &sock);
    let v = check_json(&mut cmd);
    assert_eq!(v["containerd"]["reachable"], false);
    assert_eq!(v["auto_backend"]["backend"], "process");
}

/// A user made for one test; removed with everything `setup-rootless` gave it.
struct TestUser {
    name: String,
    cgroup_dirs: Vec<PathBuf>,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("aacsys{}", std::process::id() % 1_000_000);
        let _ = Command::new("userdel")
            .arg(&name)
            .stderr(std::process::Stdio::null())
            .status();
        // Without the subordinate ids useradd would give it: setup-rootless adds them.
        let ok = Command::new("useradd")
            .args([
                "-M",
                "-s",
                "/bin/sh",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
            ])
            .arg(&name)
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd {name}");
        let mut cgroup_dirs = Vec::new();
        if cgroup_mounts().iter().any(|(t, _, _)| t == "cgroup") {
            for c in ["memory", "pids", "cpu", "cpuacct"] {
                if let Some(m) = v1_mount(c) {
                    let d = m.join(format!("aac-{name}"));
                    if !cgroup_dirs.contains(&d) {
                        cgroup_dirs.push(d);
                    }
                }
            }
        } else {
            cgroup_dirs.push(PathBuf::from(format!("/sys/fs/cgroup/aac-{name}")));
        }
        TestUser { name, cgroup_dirs }
    }

    fn uid(&self) -> u32 {
        nix::unistd::User::from_name(&self.name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for d in &self.cgroup_dirs {
            // children the test made first, then the subtree
            if let Ok(entries) = std::fs::read_dir(d.join("aac")) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(d.join("aac"));
            let _ = std::fs::remove_dir(d);
        }
        let _ = Command::new("userdel").arg(&self.name).status();
        for f in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(t) = std::fs::read_to_string(f) {
                let prefix = format!("{}:", self.name);
                let kept: String = t
                    .lines()
                    .filter(|l| !l.starts_with(&prefix))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if kept != t {
                    let _ = std::fs::write(f, kept);
                }
            }
        }
    }
}

fn subid_lines(file: &str, user: &str) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{user}:")))
        .map(str::to_string)
        .collect()
}

/// `(start, end)` of every range in an /etc/subuid-style file.
fn ranges(file: &str) -> Vec<(String, u64, u64)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let owner = f.next()?.to_string();
            let start: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            Some((owner, start, start + count))
        })
        .collect()
}

#[test]
fn setup_rootless_prepares_a_user_once() {
    if !root() {
        return;
    }
    // setup-rootless is for hosts without systemd delegation. On cgroup v2 a user may only
    // move processes within a subtree its own session already runs in, which a test cannot
    // arrange; systemd hosts use delegation instead (checked in the VM by vm/guest).
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("skipped: cgroup v2 host; setup-rootless's subtree is tested on cgroup v1");
        return;
    }
    let user = TestUser::new();
    let uid = user.uid();

    let first = aac().ok(&["system", "setup-rootless", "--user", &user.name]);
    assert!(first.contains("created cgroup"), "{first}");
    assert!(first.contains("/etc/subuid"), "{first}");

    // one 65536 range in each file, overlapping nobody's
    for f in ["/etc/subuid", "/etc/subgid"] {
        let lines = subid_lines(f, &user.name);
        assert_eq!(lines.len(), 1, "{f}: {lines:?}");
        assert!(lines[0].ends_with(":65536"), "{}", lines[0]);
        let all = ranges(f);
        let mine = all.iter().find(|(o, _, _)| *o == user.name).unwrap();
        for other in all.iter().filter(|(o, _, _)| *o != user.name) {
            assert!(
                mine.2 <= other.1 || other.2 <= mine.1,
                "{f}: {mine:?} overlaps {other:?}"
            );
        }
    }

    // the subtree exists and belongs to the user
    for d in &user.cgroup_dirs {
        let m = std::fs::metadata(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        assert_eq!(m.uid(), uid, "{}", d.display());
        assert_eq!(
            std::fs::metadata(d.join("cgroup.procs")).unwrap().uid(),
            uid
        );
    }

    // a second run changes nothing
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap();
    let second = aac().ok(&["system", "setup-rootless", "--user", &user.name]);
    assert!(second.starts_with("nothing to do"), "{second}");
    assert_eq!(std::fs::read_to_string("/etc/subuid").unwrap(), subuid);
    assert_eq!(std::fs::read_to_string("/etc/subgid").unwrap(), subgid);

    // as the user: a cgroup below the subtree takes a memory limit (and, on v1, the user's
    // own process)
    let v1 = v1_mount("memory").is_some();
    let mem = if v1 {
        v1_mount("memory")
            .unwrap()
            .join(format!("aac-{}", user.name))
    } else {
        user.cgroup_dirs[0].clone()
    };
    let limit_file = if v1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    let script = format!(
        "set -e; d={}/aac/probe; mkdir -p $d; echo 67108864 > $d/{limit_file}; cat $d/{limit_file}; {}",
        mem.display(),
        if v1 { "echo $$ > $d/cgroup.procs; echo joined" } else { "" }
    );
    let out = Command::new("runuser")
        .args(["-u", &user.name, "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert!(so.starts_with("67108864\n"), "{so}");
    if v1 {
        assert!(so.contains("joined"), "{so}");
    }

    // the user's `aac system check` sees the subtree; on v1 the process backend uses it and
    // enforces every limit
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &user.name, "--"])
        .arg(bin("aac"))
        .args(["system", "check", "--format", "json"])
        .env("CONTAINERD_ADDRESS", "/nonexistent/containerd.sock")
        .current_dir("/");
    let v = check_json(&mut cmd);
    assert_eq!(v["user"]["uid"], uid);
    assert_eq!(
        v["cgroup"]["rootless_subtree"]["writable"], true,
        "{:#}",
        v["cgroup"]
    );
    assert_eq!(v["user_namespaces"]["subuid"].as_array().unwrap().len(), 1);
    if v1 {
        assert_eq!(
            v["cgroup"]["process_cgroup_root"],
            format!("/aac-{}", user.name)
        );
        assert_eq!(v["cgroup"]["not_enforced"], serde_json::json!([]));
    }
}

#[test]
fn setup_rootless_refuses_unknown_users() {
    if !root() {
        return;
    }
    let out = aac().run(&["system", "setup-rootless", "--user", "no-such-user-aac"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no such user"),
        "{}",
        text(&out.stderr)
    );
}

/// The systemd driver's runc options reach runc: a wrapper named as the runc binary sees
/// `--systemd-cgroup` (it drops the flag before running the real runc, as this host has no
/// systemd to ask for a scope).
#[test]
fn systemd_driver_reaches_runc() {
    if !root() {
        return;
    }
    let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipped: no runc");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runc.log");
    let wrapper = dir.path().join("runc-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nfor a; do shift; [ \"$a\" = --systemd-cgroup ] || set -- \"$@\" \"$a\"; done\nexec {runc} \"$@\"\n",
            log = log.display(),
            runc = runc.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let run = |driver: &str| {
        let _ = std::fs::remove_file(&log);
        let out = aac()
            .command(&["run", "--rm", "--network", "none", IMAGE, "echo", "hi"])
            .env("AAC_CGROUP_DRIVER", driver)
            .env("AAC_RUNC_BINARY", &wrapper)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{driver}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "hi\n");
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let calls = run("systemd");
    let create = calls
        .lines()
        .find(|l| l.contains(" create "))
        .unwrap_or_else(|| panic!("no runc create in:\n{calls}"));
    assert!(create.contains("--systemd-cgroup"), "{create}");
    let calls = run("cgroupfs");
    assert!(calls.contains(" create "), "{calls}");
    assert!(!calls.contains("--systemd-cgroup"), "{calls}");
}
