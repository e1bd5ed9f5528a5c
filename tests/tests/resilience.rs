//! containerd restarted while containers run: aac keeps working and leaves nothing behind.
//! (Its own test binary: restarting the private containerd must not disturb other tests.)

use std::time::Duration;

use aac_tests::cli::aac;
use aac_tests::{leftovers, restart_containerd, IMAGE};

#[test]
fn containerd_restarted_mid_run() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (containerd, runc and CNI)");
        return;
    }
    let a = aac();
    let id = a
        .ok(&[
            "run",
            "-d",
            "--name",
            "survivor",
            "--restart",
            "on-failure",
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do echo tick; sleep 0.2; done",
        ])
        .trim()
        .to_string();
    restart_containerd();
    // The container and its monitor outlive containerd's restart.
    std::thread::sleep(Duration::from_millis(500));
    let v = a.inspect("survivor");
    assert_eq!(v["State"]["Status"], "running", "{}", v["State"]);
    assert_eq!(v["State"]["MonitorAlive"], true, "{}", v["State"]);
    assert_eq!(
        a.ok(&["exec", "survivor", "echo", "still-here"]),
        "still-here\n"
    );
    // Its output still reaches the log after the restart.
    let before = a.ok(&["logs", "survivor"]).lines().count();
    std::thread::sleep(Duration::from_millis(800));
    let after = a.ok(&["logs", "survivor"]).lines().count();
    assert!(
        after > before,
        "no output after containerd restarted ({before} -> {after})"
    );
    // A stop is recorded as such and not restarted.
    a.ok(&["stop", "survivor"]);
    let v = a.inspect("survivor");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 0);
    assert_eq!(v["State"]["RestartCount"], 0);
    a.ok(&["rm", "survivor"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let l = leftovers(&aac_tests::client().await, &id).await;
        assert!(
            l.containers.is_empty() && l.snapshots.is_empty() && l.leases.is_empty(),
            "{l:?}"
        );
    });
    assert!(a.record_ids().is_empty());
}
