//! Containers and tasks against a private containerd.

use aac_runtime::containerd::{CreateRequest, CtrdError, Stdio, TaskStatus};
use aac_tests::*;

fn request(id: &str, args: &[&str], stdout: Option<&std::path::Path>) -> CreateRequest {
    CreateRequest {
        id: id.to_string(),
        image_ref: IMAGE.to_string(),
        spec: spec(id, args),
        labels: [("aac.test".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
        stdio: Stdio {
            stdout: stdout.map(|p| p.display().to_string()),
            stderr: stdout.map(|p| p.display().to_string()),
            ..Default::default()
        },
        systemd_cgroup: false,
    }
}

#[tokio::test]
async fn echo_hello() {
    let c = client().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = output_file(tmp.path(), "out");
    let id = unique_id("echo");
    c.create(request(&id, &["echo", "hello"], Some(&out)))
        .await
        .unwrap();
    let listed = c.list_containers().await.unwrap();
    let me = listed.iter().find(|x| x.id == id).expect("listed");
    assert_eq!(me.image, IMAGE);
    assert_eq!(me.labels.get("aac.test").map(String::as_str), Some("1"));
    assert_eq!(c.task_state(&id).await.unwrap().status, TaskStatus::Created);
    c.start(&id).await.unwrap();
    let st = c.wait(&id).await.unwrap();
    assert_eq!(st.code, 0);
    assert_eq!(c.task_state(&id).await.unwrap().status, TaskStatus::Stopped);
    c.delete(&id).await.unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn exit_code_propagates() {
    let c = client().await;
    let id = unique_id("exit");
    c.create(request(&id, &["sh", "-c", "exit 3"], None))
        .await
        .unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(c.wait(&id).await.unwrap().code, 3);
    let exit = c.delete(&id).await.unwrap();
    assert_eq!(exit.map(|e| e.code), Some(3));
}

#[tokio::test]
async fn missing_command_is_127_and_leaves_nothing() {
    let c = client().await;
    let id = unique_id("missing");
    let err = c
        .create(request(&id, &["no-such-command"], None))
        .await
        .unwrap_err();
    assert!(matches!(err, CtrdError::CommandNotFound { .. }), "{err:?}");
    assert_eq!(err.exit_code(), Some(127));
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());

    let id = unique_id("missing-abs");
    let err = c
        .create(request(&id, &["/nope/x"], None))
        .await
        .unwrap_err();
    assert!(matches!(err, CtrdError::CommandNotFound { .. }), "{err:?}");
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn non_executable_is_126_and_leaves_nothing() {
    let c = client().await;
    let id = unique_id("noexec");
    let err = c
        .create(request(&id, &["/bin/notexec"], None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CtrdError::CommandNotExecutable { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), Some(126));
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn duplicate_id_is_rejected_and_keeps_the_first() {
    let c = client().await;
    let id = unique_id("dup");
    c.create(request(&id, &["true"], None)).await.unwrap();
    let err = c.create(request(&id, &["true"], None)).await.unwrap_err();
    assert!(matches!(err, CtrdError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(c.task_state(&id).await.unwrap().status, TaskStatus::Created);
    c.kill(&id, 9, true).await.unwrap();
    c.wait(&id).await.unwrap();
    c.delete(&id).await.unwrap();
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn kill_with_sigterm() {
    let c = client().await;
    let id = unique_id("kill");
    // PID 1 ignores signals it has no handler for, so the shell traps TERM itself.
    let tmp = tempfile::tempdir().unwrap();
    let out = output_file(tmp.path(), "out");
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; sleep 60 & wait";
    c.create(request(&id, &["sh", "-c", script], Some(&out)))
        .await
        .unwrap();
    c.start(&id).await.unwrap();
    assert_eq!(c.task_state(&id).await.unwrap().status, TaskStatus::Running);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&out).unwrap().contains("ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "container never got ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let err = c.delete(&id).await.unwrap_err();
    assert!(matches!(err, CtrdError::TaskRunning(_)), "{err:?}");
    assert!(c
        .list_containers()
        .await
        .unwrap()
        .iter()
        .any(|x| x.id == id));
    c.kill(&id, 15, false).await.unwrap();
    let st = tokio::time::timeout(std::time::Duration::from_secs(10), c.wait(&id))
        .await
        .expect("SIGTERM stops sleep")
        .unwrap();
    assert_eq!(st.code, 7);
    c.delete(&id).await.unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ready\ngot-term\n");
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn exec_in_running_container() {
    let c = client().await;
    let tmp = tempfile::tempdir().unwrap();
    let id = unique_id("exec");
    c.create(request(&id, &["sleep", "60"], None))
        .await
        .unwrap();
    c.start(&id).await.unwrap();
    let out = output_file(tmp.path(), "exec-out");
    let stdio = Stdio {
        stdout: Some(out.display().to_string()),
        ..Default::default()
    };
    let (_, exit) = c
        .exec(
            &id,
            "e1",
            &process(&["sh", "-c", "cat /etc/hostname; hostname"]),
            stdio,
        )
        .await
        .unwrap();
    assert_eq!(exit.wait().await.unwrap().code, 0);
    c.delete_exec(&id, "e1").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("aac-image\n{id}\n")
    );
    let Err(err) = c
        .exec(&id, "e2", &process(&["no-such"]), Stdio::default())
        .await
    else {
        panic!("exec of a missing command succeeded")
    };
    assert!(matches!(err, CtrdError::CommandNotFound { .. }), "{err:?}");
    c.kill(&id, 9, true).await.unwrap();
    assert_eq!(c.wait(&id).await.unwrap().code, 137);
    c.delete(&id).await.unwrap();
    assert_eq!(leftovers(&c, &id).await, Leftovers::default());
}

#[tokio::test]
async fn twenty_cycles_leave_nothing() {
    let c = client().await;
    let prefix = unique_id("cycle");
    for i in 0..20 {
        let id = format!("{prefix}-{i}");
        c.create(request(&id, &["true"], None)).await.unwrap();
        c.start(&id).await.unwrap();
        assert_eq!(c.wait(&id).await.unwrap().code, 0);
        c.delete(&id).await.unwrap();
    }
    assert_eq!(leftovers(&c, &prefix).await, Leftovers::default());
}

#[tokio::test]
async fn delete_of_unknown_container_is_ok() {
    let c = client().await;
    assert_eq!(c.delete(&unique_id("ghost")).await.unwrap(), None);
}
