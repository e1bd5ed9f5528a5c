//! docker's `run`/`create` flags of issue 19 end to end through the `aac` binary: what the
//! container's cgroup files, resolv.conf, address, capabilities and devices show, and what
//! `inspect` holds.

use std::time::Duration;

use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;

const LONG: Duration = Duration::from_secs(60);

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// `aac ARGS` must fail with 125 and one clear line that contains `want`.
fn refused(args: &[&str], want: &str) {
    let out = aac().run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "aac {args:?}: {err}");
    assert!(err.contains(want), "aac {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "aac {args:?}: {err}");
}

/// Whether the host runs cgroup v2 only.
fn unified() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The last CPU of this host: a cpuset that is not the default "all of them" when there are
/// two or more.
fn last_cpu() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        - 1
}

#[test]
fn cpuset_and_cpu_shares_reach_the_cgroup() {
    if !root() {
        return;
    }
    let cpu = last_cpu().to_string();
    let script = if unified() {
        "cat /sys/fs/cgroup/cpuset.cpus; cat /sys/fs/cgroup/cpu.weight; \
         grep Cpus_allowed_list /proc/self/status"
    } else {
        "cat /sys/fs/cgroup/cpuset/cpuset.cpus; cat /sys/fs/cgroup/cpu/cpu.shares; \
         grep Cpus_allowed_list /proc/self/status"
    };
    let out = aac().ok(&[
        "run",
        "--rm",
        "--cpuset-cpus",
        &cpu,
        "--cpu-shares",
        "512",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], cpu, "cpuset.cpus: {out}");
    // v2 holds the weight runc converts 512 shares to
    let weight = if unified() { "20" } else { "512" };
    assert_eq!(lines[1], weight, "cpu shares: {out}");
    // and the kernel holds the process to it
    assert_eq!(
        lines[2].split_whitespace().last(),
        Some(cpu.as_str()),
        "{out}"
    );

    // inspect says so, in docker's names
    let a = aac();
    let name = "rf-cpu";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "create",
        "--name",
        name,
        "--cpuset-cpus",
        &cpu,
        "-c",
        "512",
        IMAGE,
        "true",
    ]);
    let v = a.inspect(name);
    assert_eq!(v["HostConfig"]["CpusetCpus"], cpu.as_str());
    assert_eq!(v["HostConfig"]["CpuShares"], 512);
    a.ok(&["rm", name]);

    refused(
        &["run", "--rm", "--cpuset-cpus", "3-1", IMAGE, "true"],
        "--cpuset-cpus",
    );
    refused(
        &["run", "--rm", "--cpu-shares", "1", IMAGE, "true"],
        "--cpu-shares",
    );
}

#[test]
fn memory_swap_reaches_the_cgroup() {
    if !root() {
        return;
    }
    let (file, want) = if unified() {
        // v2 holds the swap alone: 96m - 64m
        ("/sys/fs/cgroup/memory.swap.max", (32u64 << 20).to_string())
    } else {
        (
            "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
            (96u64 << 20).to_string(),
        )
    };
    if !unified()
        && !std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    {
        eprintln!("skipped: no swap accounting on this host");
        return;
    }
    let out = aac().ok(&[
        "run",
        "--rm",
        "-m",
        "64m",
        "--memory-swap",
        "96m",
        IMAGE,
        "cat",
        file,
    ]);
    assert_eq!(out.trim(), want, "{file}");
    let a = aac();
    let name = "rf-swap";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "create",
        "--name",
        name,
        "-m",
        "64m",
        "--memory-swap",
        "96m",
        IMAGE,
        "true",
    ]);
    assert_eq!(
        a.inspect(name)["HostConfig"]["MemorySwap"],
        96u64 << 20,
        "inspect"
    );
    a.ok(&["rm", name]);

    // memory plus swap: never below the memory, never without it
    refused(
        &[
            "run",
            "--rm",
            "-m",
            "64m",
            "--memory-swap",
            "32m",
            IMAGE,
            "true",
        ],
        "memorySwap",
    );
    refused(
        &["run", "--rm", "--memory-swap", "32m", IMAGE, "true"],
        "needs a memory limit",
    );
}

#[test]
fn dns_search_and_options_land_in_resolv_conf() {
    if !root() {
        return;
    }
    let out = aac().ok(&[
        "run",
        "--rm",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-search",
        "lab.example",
        "--dns-opt",
        "ndots:2",
        "--dns-opt",
        "timeout:3",
        IMAGE,
        "cat",
        "/etc/resolv.conf",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"nameserver 192.0.2.53"), "{out}");
    assert!(lines.contains(&"search corp.example lab.example"), "{out}");
    assert!(lines.contains(&"options ndots:2 timeout:3"), "{out}");
    // one search line and one options line: the host's are replaced, not kept beside
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("search")).count(),
        1,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("options")).count(),
        1,
        "{out}"
    );
    // `.` means no search domain at all
    let out = aac().ok(&[
        "run",
        "--rm",
        "--dns-search",
        ".",
        IMAGE,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(!out.lines().any(|l| l.starts_with("search")), "{out}");
}

#[test]
fn ip_on_a_user_network() {
    if !root() {
        return;
    }
    let a = aac();
    for n in ["rf-ip-a", "rf-ip-b"] {
        let _ = a.run(&["rm", "-f", n]);
    }
    let _ = a.run(&["network", "rm", "rf-ipnet"]);
    a.ok(&["network", "create", "--subnet", "10.97.42.0/24", "rf-ipnet"]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "rf-ip-a",
        "--network",
        "rf-ipnet",
        "--ip",
        "10.97.42.77",
        IMAGE,
        "sleep",
        "300",
    ]);
    // the address inside the container is the one asked for
    let addr = a.ok(&["exec", "rf-ip-a", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(addr.contains("10.97.42.77/24"), "{addr}");
    assert_eq!(
        a.inspect("rf-ip-a")["NetworkSettings"]["IPAddress"],
        "10.97.42.77"
    );
    // a second container cannot take it; nothing of the refused one is left
    let before = a.record_ids().len();
    refused(
        &[
            "run",
            "-d",
            "--name",
            "rf-ip-b",
            "--network",
            "rf-ipnet",
            "--ip",
            "10.97.42.77",
            IMAGE,
            "sleep",
            "300",
        ],
        "already in use",
    );
    assert_eq!(a.record_ids().len(), before);
    assert!(!a.run(&["inspect", "rf-ip-b"]).status.success());
    // outside the subnet, and on the default network: refused with the reason
    refused(
        &[
            "run",
            "--rm",
            "--network",
            "rf-ipnet",
            "--ip",
            "10.1.2.3",
            IMAGE,
            "true",
        ],
        "not in the subnet",
    );
    refused(
        &["run", "--rm", "--ip", "10.88.0.99", IMAGE, "true"],
        "user-defined network",
    );
    // the address is free again once its container is gone
    a.ok(&["rm", "-f", "rf-ip-a"]);
    let out = a.ok(&[
        "run",
        "--rm",
        "--network",
        "rf-ipnet",
        "--ip",
        "10.97.42.77",
        IMAGE,
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains("10.97.42.77/24"), "{out}");
    a.ok(&["network", "rm", "rf-ipnet"]);
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn privileged_on_containerd_and_refused_on_the_process_backend() {
    if !root() {
        return;
    }
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = u64::from_str_radix(&status_field(&own, "CapBnd:"), 16).unwrap();
    let out = aac().ok(&[
        "run",
        "--rm",
        "--privileged",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/self/status; echo ---; grep ' /sys ' /proc/mounts; echo ---; \
         ls /dev; echo ---; cat /proc/timer_list | head -1",
    ]);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{out}");
    // every capability the host has, no seccomp filter
    let eff = u64::from_str_radix(&status_field(parts[0], "CapEff:"), 16).unwrap();
    assert_eq!(eff, bnd, "CapEff vs the host's CapBnd");
    assert_eq!(status_field(parts[0], "Seccomp:"), "0");
    // /sys is writable
    assert!(
        parts[1]
            .split_whitespace()
            .nth(3)
            .unwrap_or("")
            .starts_with("rw"),
        "{}",
        parts[1]
    );
    // the host's devices are there (a loop or kmsg device every Linux host has)
    let devs: Vec<&str> = parts[2].lines().collect();
    let host_has = |d: &str| std::path::Path::new("/dev").join(d).exists();
    for d in ["kmsg", "loop-control"] {
        if host_has(d) {
            assert!(devs.contains(&d), "/dev/{d} missing: {devs:?}");
        }
    }
    // nothing masked: /proc/timer_list reads as the kernel's, not as /dev/null
    assert!(!parts[3].trim().is_empty(), "timer_list is masked");

    // without it: the defaults (a filter, /sys read-only, no kmsg)
    let out = aac().ok(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; ls /dev",
    ]);
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(!out.lines().any(|l| l == "kmsg"), "{out}");

    let a = aac();
    let name = "rf-priv";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&["create", "--name", name, "--privileged", IMAGE, "true"]);
    assert_eq!(a.inspect(name)["HostConfig"]["Privileged"], true);
    a.ok(&["rm", name]);

    // the process backend refuses, saying why, and leaves nothing
    let before = a.record_ids().len();
    refused(
        &[
            "run",
            "--rm",
            "--runtime",
            "process",
            "--privileged",
            "true",
        ],
        "refused on the process backend",
    );
    assert_eq!(a.record_ids().len(), before);
}

#[test]
fn health_on_failure_kill_kills_and_the_restart_policy_decides() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "rf-hc-kill";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--health-cmd",
        "test -e /tmp/fine",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-start-period",
        "0s",
        "--health-on-failure",
        "kill",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/fine; sleep 2; rm /tmp/fine; sleep 600",
    ]);
    // killed (SIGKILL: 137), not stopped: no restart policy, so it stays exited
    let v = a.wait_for(name, LONG, "exited", |v| v["State"]["Status"] == "exited");
    assert_eq!(v["State"]["ExitCode"], 137, "{}", v["State"]);
    assert_eq!(v["State"]["Health"]["Status"], "unhealthy");
    a.ok(&["rm", "-f", name]);

    // with --restart always the container comes back after the kill
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--restart",
        "always",
        "--health-cmd",
        "test -e /tmp/fine",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-on-failure",
        "kill",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/fine; sleep 2; rm /tmp/fine; sleep 600",
    ]);
    let v = a.wait_for(name, LONG, "a restart", |v| {
        v["RestartCount"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(v["RestartCount"].as_u64().map(|c| c >= 1), Some(true));
    a.ok(&["rm", "-f", name]);

    refused(
        &[
            "run",
            "--rm",
            "--health-cmd",
            "true",
            "--health-on-failure",
            "explode",
            IMAGE,
            "true",
        ],
        "--health-on-failure",
    );
}

#[test]
fn cpuset_on_the_process_backend() {
    if !root() {
        return;
    }
    let cpu = last_cpu().to_string();
    let out = aac().run(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--cpuset-cpus",
        &cpu,
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    // the kernel holds the host process to the set, and nothing says it is not enforced
    assert_eq!(s.split_whitespace().last(), Some(cpu.as_str()), "{s}");
    assert!(
        !text(&out.stderr).contains("cpuset"),
        "{}",
        text(&out.stderr)
    );
}
