//! Faults that used to leave things behind: containerd killed during `aac run -d`, the CLI
//! killed half-way, a full disk, the process backend's monitor killed. After the next aac
//! command that touches the state (or `aac system prune`), nothing with aac's labels is left
//! in containerd, no name points at nothing, no folder, netns, cgroup or CNI allocation
//! belongs to no container. These tests share (and crash) one containerd: they run one at a
//! time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, bin, text, Aac};
use aac_tests::{client, crash_containerd, env, IMAGE, NAMESPACE};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// IDs with a record in this aac state.
fn record_ids(a: &Aac) -> HashSet<String> {
    a.record_ids()
        .into_iter()
        .filter(|id| {
            a.data_dir
                .join("containers")
                .join(id)
                .join("container.json")
                .exists()
        })
        .collect()
}

/// What is left that belongs to no record: containerd containers with aac's labels, active
/// snapshots and aac leases (from containerd), and in aac's state: names without a
/// container, folders without a record, CNI attachments and IP allocations, network
/// namespaces, cgroups.
#[derive(Debug, Default, PartialEq)]
struct Orphans {
    containers: Vec<String>,
    snapshots: Vec<String>,
    leases: Vec<String>,
    names: Vec<String>,
    folders: Vec<String>,
    attachments: Vec<String>,
    netns: Vec<String>,
    cgroups: Vec<String>,
}

fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn orphans(a: &Aac) -> Orphans {
    let live = record_ids(a);
    let c = client().await;
    let containers: Vec<String> = c
        .list_containers()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.labels.contains_key("dev.aac.name") && !live.contains(&c.id))
        .map(|c| c.id)
        .collect();
    let snapshots = c
        .list_snapshots()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.kind != "committed" && s.name.len() == 64 && !live.contains(&s.name))
        .map(|s| s.name)
        .collect();
    let leases = c
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, l)| l.get("aac.dev/for").is_some_and(|id| !live.contains(id)))
        .map(|(id, _)| id)
        .collect();
    let names = list(&a.data_dir.join("names"))
        .into_iter()
        .filter(|n| {
            let id = std::fs::read_to_string(a.data_dir.join("names").join(n)).unwrap_or_default();
            !live.contains(&id)
        })
        .collect();
    let mut folders: Vec<String> = list(&a.data_dir.join("containers"));
    folders.extend(list(&a.run_dir.join("containers")));
    folders.retain(|id| !live.contains(id));
    folders.sort();
    folders.dedup();
    let mut attachments: Vec<String> = list(&a.data_dir.join("networks/attachments"))
        .into_iter()
        .filter(|f| !live.contains(f.trim_end_matches(".json")))
        .collect();
    // host-local's IP allocations: a file per address holding the container's ID.
    for net in list(&a.data_dir.join("cni/networks")) {
        let dir = a.data_dir.join("cni/networks").join(&net);
        for f in list(&dir) {
            let owner = std::fs::read_to_string(dir.join(&f)).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or("").trim().to_string();
            if owner.len() == 64 && !live.contains(&owner) {
                attachments.push(format!("{net}/{f}"));
            }
        }
    }
    let netns = list(&a.run_dir.join("netns"))
        .into_iter()
        .filter(|n| !live.contains(n))
        .collect();
    let cgroups = ["memory", "pids", "cpu,cpuacct", "unified", ""]
        .iter()
        .flat_map(|ctrl| list(&Path::new("/sys/fs/cgroup").join(ctrl).join("aac")))
        .filter(|id| id.len() == 64 && !live.contains(id) && seen_by(a, id))
        .collect();
    Orphans {
        containers,
        snapshots,
        leases,
        names,
        folders,
        attachments,
        netns,
        cgroups,
    }
}

/// The IDs this test's runs produced (cgroups under /aac are shared by every aac state on the
/// host: only those of our own containers count).
static OURS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn seen_by(_a: &Aac, id: &str) -> bool {
    OURS.lock().unwrap().iter().any(|o| o == id)
}

/// Remember every ID that appears in this state (records, folders, CNI files).
fn note_ids(a: &Aac) {
    let mut ours = OURS.lock().unwrap();
    for dir in [
        a.data_dir.join("containers"),
        a.run_dir.join("containers"),
        a.run_dir.join("netns"),
    ] {
        for id in list(&dir) {
            if !ours.contains(&id) {
                ours.push(id);
            }
        }
    }
}

fn prune(a: &Aac) -> String {
    a.ok(&["system", "prune"])
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `aac run -d` started in the background.
fn spawn_run(a: &Aac, args: &[&str]) -> std::process::Child {
    a.command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn containerd_killed_during_run_leaves_nothing_after_prune() {
    if !root() {
        return;
    }
    let _one = serial();
    let a = aac();
    // Kill containerd at different moments of `aac run -d`: before, while and after its task
    // is created.
    for (i, delay_ms) in [0u64, 30, 60, 100, 150, 250, 400].iter().enumerate() {
        let name = format!("crash{i}");
        let mut run = spawn_run(a, &["run", "-d", "--name", &name, IMAGE, "sleep", "300"]);
        std::thread::sleep(Duration::from_millis(*delay_ms));
        crash_containerd();
        let deadline = Instant::now() + Duration::from_secs(60);
        while run.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "aac run did not end after the crash"
            );
            note_ids(a);
            std::thread::sleep(Duration::from_millis(20));
        }
        note_ids(a);
        // Whatever happened, the next aac command sees a consistent state.
        let _ = a.run(&["rm", "-f", &name]);
    }
    prune(a);
    let left = block_on(orphans(a));
    assert_eq!(
        left,
        Orphans::default(),
        "left behind after containerd crashes"
    );
    // The names are free again.
    for i in 0..7 {
        assert!(a.run(&["inspect", &format!("crash{i}")]).status.code() != Some(0));
    }
    let id = a.ok(&["run", "-d", "--name", "crash0", IMAGE, "sleep", "300"]);
    a.ok(&["rm", "-f", "crash0"]);
    assert_eq!(id.trim().len(), 64);
}

#[test]
fn a_killed_cli_leaks_no_name_and_no_container() {
    if !root() {
        return;
    }
    let _one = serial();
    let a = aac();
    for (i, delay_ms) in [0u64, 5, 10, 20, 40, 80, 160].iter().enumerate() {
        let name = format!("killed{i}");
        let mut run = spawn_run(a, &["run", "-d", "--name", &name, IMAGE, "sleep", "300"]);
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let _ = run.kill();
        let _ = run.wait();
        note_ids(a);
        // A monitor the CLI had started carries on: let it finish starting.
        std::thread::sleep(Duration::from_millis(300));
        note_ids(a);
        // `ps` collects what the killed run left; the name is either a running container's
        // (then rm frees it) or free.
        a.ok(&["ps", "-a"]);
        let _ = a.run(&["rm", "-f", &name]);
        a.ok(&["run", "-d", "--name", &name, IMAGE, "true"]);
        a.ok(&["rm", "-f", &name]);
    }
    prune(a);
    let left = block_on(orphans(a));
    assert_eq!(left, Orphans::default(), "left behind by killed CLIs");
}

/// Mount a small tmpfs on `dir`.
fn small_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size},mode=0700").as_str()),
    )
    .unwrap();
}

#[test]
fn a_full_disk_fails_the_run_and_blocks_no_name() {
    if !root() {
        return;
    }
    let _one = serial();
    let main = aac();
    let base = PathBuf::from(format!("/tmp/aac-cli/{}-fulldisk", std::process::id()));
    let data = base.join("data");
    small_tmpfs(&data, "512k");
    let a = Aac {
        run_dir: base.join("run"),
        data_dir: data.clone(),
        bridge: main.bridge.clone(),
    };
    let cleanup = |a: &Aac| {
        let _ = a.command(&["rm", "-f", "full"]).output();
        let _ = nix::mount::umount2(&a.data_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(a.data_dir.parent().unwrap());
    };
    // Fill the disk to the last byte.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut f, &[0u8]).is_ok() {}
    drop(f);
    let out = a.run(&[
        "run",
        "-d",
        "--name",
        "full",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "60",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("No space left") || err.contains("space"),
        "{err}"
    );
    // Nothing half-written blocks the name: no empty name file, no folder.
    let names = list(&data.join("names"));
    assert!(
        names.iter().all(|n| n.starts_with('.')) && names.is_empty(),
        "{names:?}"
    );
    assert!(list(&data.join("containers")).is_empty());
    std::fs::remove_file(&filler).unwrap();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "full",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "60",
    ]);
    let v = a.inspect("full");
    assert_eq!(v["State"]["Status"], "running");
    cleanup(&a);
}

/// Lines `n` of the log of `name` that are numbers, in order.
fn numbers(a: &Aac, name: &str) -> Vec<u64> {
    text(&a.run(&["logs", name]).stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_killed_process_monitor_is_replaced_and_the_agent_lives_on() {
    if !root() {
        return;
    }
    let _one = serial();
    let a = aac();
    a.ok(&[
        "run",
        "-d",
        "--runtime",
        "process",
        "--network",
        "none",
        "--name",
        "procmon",
        "/bin/sh",
        "-c",
        "trap 'exit 3' TERM; i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done",
    ]);
    let v = a.wait_for("procmon", Duration::from_secs(20), "output", |_| {
        numbers(a, "procmon").len() >= 5
    });
    let pid = v["State"]["Pid"].as_i64().unwrap();
    let monitor = v["State"]["MonitorPid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // While no monitor reads, the agent keeps writing into the FIFO (it must not die of
    // SIGPIPE).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the agent died with its monitor"
    );
    // The next command brings a monitor back; it adopts the same process.
    let v = a.inspect("procmon");
    assert_eq!(v["State"]["Status"], "running", "{}", v["State"]);
    assert_eq!(v["State"]["Pid"].as_i64(), Some(pid));
    assert_eq!(v["State"]["MonitorAlive"], true, "{}", v["State"]);
    assert_ne!(v["State"]["MonitorPid"].as_i64(), Some(monitor));
    let before = numbers(a, "procmon");
    a.wait_for("procmon", Duration::from_secs(20), "new output", |_| {
        numbers(a, "procmon").len() > before.len() + 5
    });
    // No line lost across the change of monitor.
    let nums = numbers(a, "procmon");
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap in the log: {w:?}");
    }
    // The adopted agent's exit status is known (its own, from its trap), not guessed.
    a.ok(&["stop", "-t", "5", "procmon"]);
    let v = a.inspect("procmon");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 3, "{}", v["State"]);
    a.ok(&["rm", "procmon"]);
}

/// Mode bits of a path.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

const OTHER: &str = "aac-state-probe";

fn other_user() -> u32 {
    let exists = Command::new("id").args(["-u", OTHER]).output().unwrap();
    if !exists.status.success() {
        let ok = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", OTHER])
            .status()
            .unwrap();
        assert!(ok.success(), "useradd {OTHER}");
    }
    text(
        &Command::new("id")
            .args(["-u", OTHER])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap()
}

fn as_other(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("runuser");
    c.args(["-u", OTHER, "--", "env", "-i", "PATH=/usr/bin:/bin"]);
    for (k, v) in envs {
        c.arg(format!("{k}={v}"));
    }
    c.args(args).current_dir("/").stdin(Stdio::null());
    c.output().unwrap()
}

#[test]
fn state_is_private_to_its_owner() {
    if !root() {
        return;
    }
    let _one = serial();
    let a = aac();
    other_user();
    a.ok(&[
        "run",
        "-d",
        "--name",
        "private",
        "-e",
        "SECRET_TOKEN=canary-7f3a",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo canary-output; sleep 60",
    ]);
    a.wait_for("private", Duration::from_secs(20), "output", |_| {
        text(&a.run(&["logs", "private"]).stdout).contains("canary-output")
    });
    let id = a.inspect("private")["Id"].as_str().unwrap().to_string();
    let dir = a.data_dir.join("containers").join(&id);
    for d in [&a.data_dir, &a.run_dir, &dir, &a.data_dir.join("names")] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    for f in ["container.json", "status.json", "json.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&a.data_dir.join("events.jsonl")), 0o600);
    assert_eq!(mode(&a.data_dir.join("names/private")), 0o600);
    assert_eq!(
        mode(&a.run_dir.join("containers").join(&id).join("shim.log")),
        0o600
    );
    // Another local user reads none of it: not the record, not the log, not through aac.
    for f in ["container.json", "json.log"] {
        let out = as_other(&["cat", &dir.join(f).to_string_lossy()], &[]);
        assert!(!out.status.success());
        assert!(!text(&out.stdout).contains("canary"));
    }
    let data = a.data_dir.to_string_lossy().into_owned();
    let run = a.run_dir.to_string_lossy().into_owned();
    let out = as_other(
        &[&bin("aac").to_string_lossy(), "inspect", "private"],
        &[("AAC_DATA_DIR", &data), ("AAC_RUN_DIR", &run)],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(!text(&out.stdout).contains("canary"));
    assert!(
        text(&out.stderr).contains("refusing") || text(&out.stderr).contains("ermission"),
        "{}",
        text(&out.stderr)
    );
    a.ok(&["rm", "-f", "private"]);
}

#[test]
fn unsafe_or_missing_state_folders_are_refused() {
    if !root() {
        return;
    }
    let _one = serial();
    let uid = other_user();
    let base = PathBuf::from(format!("/tmp/aac-cli/{}-unsafe", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let aac_bin = bin("aac").to_string_lossy().into_owned();
    // A folder anyone may write.
    let shared = base.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let run = base.join("run");
    let out = Command::new(&aac_bin)
        .args(["ps"])
        .env("AAC_DATA_DIR", &shared)
        .env("AAC_RUN_DIR", &run)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&shared.display().to_string()) && err.contains("writable"),
        "{err}"
    );
    // A folder of another user.
    let theirs = base.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    let out = Command::new(&aac_bin)
        .args(["ps"])
        .env("AAC_DATA_DIR", &theirs)
        .env("AAC_RUN_DIR", &run)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&theirs.display().to_string()) && err.contains("belongs to uid"),
        "{err}"
    );
    // A user without XDG_RUNTIME_DIR gets no folder under /tmp, but a clear error.
    let out = as_other(&[&aac_bin, "ps"], &[("HOME", "/nonexistent")]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    assert!(!Path::new(&format!("/tmp/aac-run-{uid}")).exists());
    let _ = std::fs::remove_dir_all(&base);
    let _ = env(); // keep the private containerd of this binary alive for the others
    let _ = NAMESPACE;
}
