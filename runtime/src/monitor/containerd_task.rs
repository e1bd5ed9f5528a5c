//! The monitor's handle on a containerd container.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::containerd::{Client, CreateRequest, CtrdError, Stdio, TaskStatus};
use crate::health::CommandRunner;
use crate::record::ContainerRecord;
use crate::state::{new_id, StateDirs};

use super::{MonitorError, StdioPaths, Task};

/// Labels aac puts on its containerd containers (visible to `ctr -n aac containers ls`).
pub fn container_labels(rec: &ContainerRecord) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = rec
        .agent
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert("dev.aac.name".into(), rec.name.clone());
    labels.insert("dev.aac.agent".into(), rec.agent.metadata.name.clone());
    if let Some(v) = &rec.agent.metadata.version {
        labels.insert("dev.aac.agent.version".into(), v.clone());
    }
    labels.insert("dev.aac.created".into(), rec.created.clone());
    labels
}

/// How long a monitor waits for containerd to come back before giving up on a container.
const CONTAINERD_OUTAGE: Duration = Duration::from_secs(300);

/// containerd went away or the call was cut: worth retrying.
fn is_transient(e: &CtrdError) -> bool {
    match e {
        CtrdError::Unreachable { .. } => true,
        CtrdError::Grpc { code, .. } => matches!(
            code,
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

fn backend_err(e: CtrdError) -> MonitorError {
    let code = e.exit_code();
    MonitorError::backend(e, code)
}

pub struct ContainerdTask {
    pub client: Client,
    pub record: ContainerRecord,
    pub dirs: StateDirs,
    /// Raised by the OOM event watch of the current run.
    oom: Arc<AtomicBool>,
    oom_watch: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ContainerdTask {
    pub fn new(client: Client, record: ContainerRecord, dirs: StateDirs) -> ContainerdTask {
        ContainerdTask {
            client,
            record,
            dirs,
            oom: Arc::new(AtomicBool::new(false)),
            oom_watch: Mutex::new(None),
        }
    }

    /// Watch for OOM events of this run (started after the task exists: containerd answers a
    /// subscription only with its first event).
    fn watch_oom(&self) {
        self.oom.store(false, Ordering::SeqCst);
        let handle = self.client.watch_oom(&self.record.id, self.oom.clone());
        if let Ok(mut w) = self.oom_watch.lock() {
            if let Some(old) = w.replace(handle) {
                old.abort();
            }
        }
    }
}

impl Drop for ContainerdTask {
    fn drop(&mut self) {
        if let Ok(mut w) = self.oom_watch.lock() {
            if let Some(h) = w.take() {
                h.abort();
            }
        }
    }
}

impl ContainerdTask {
    fn id(&self) -> &str {
        &self.record.id
    }
}

impl CommandRunner for ContainerdTask {
    async fn run(&self, argv: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), String> {
        let spec = self.record.oci_spec().map_err(|e| e.to_string())?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| "the container spec has no process".to_string())?;
        process.set_args(Some(argv.to_vec()));
        process.set_terminal(Some(false));
        let exec_id = format!("probe-{}", &new_id()[..12]);
        let out = self
            .dirs
            .container_run_dir(self.id())
            .join(format!("{exec_id}.out"));
        std::fs::write(&out, b"").map_err(|e| format!("{}: {e}", out.display()))?;
        let path = out.to_string_lossy().into_owned();
        let stdio = Stdio {
            stdin: None,
            stdout: Some(path.clone()),
            stderr: Some(path),
            terminal: false,
        };
        let result = async {
            self.client
                .exec(self.id(), &exec_id, &process, stdio)
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(timeout, self.client.wait_exec(self.id(), &exec_id)).await {
                Ok(r) => r.map(|s| s.code as i32).map_err(|e| e.to_string()),
                Err(_) => {
                    let _ = self.client.kill_exec(self.id(), &exec_id, 9).await;
                    Err(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    ))
                }
            }
        }
        .await;
        let _ = self.client.delete_exec(self.id(), &exec_id).await;
        let output = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        result.map(|code| (code, output))
    }
}

impl Task for ContainerdTask {
    async fn start(&self, stdio: &StdioPaths) -> Result<u32, MonitorError> {
        let io = Stdio {
            stdin: stdio
                .stdin
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            stdout: Some(stdio.stdout.to_string_lossy().into_owned()),
            stderr: (!self.record.tty).then(|| stdio.stderr.to_string_lossy().into_owned()),
            terminal: self.record.tty,
        };
        let exists = self
            .client
            .list_containers()
            .await
            .map_err(backend_err)?
            .iter()
            .any(|c| c.id == self.record.id);
        if exists {
            // A task left behind (created but never started, or exited and not deleted by a
            // monitor that died) would block the new one.
            let _ = self.client.delete_task(self.id()).await;
            self.client
                .create_task(self.id(), &io)
                .await
                .map_err(backend_err)?;
        } else {
            let spec = self
                .record
                .oci_spec()
                .map_err(|e| MonitorError::backend(format!("stored spec: {e}"), None))?;
            self.client
                .create(CreateRequest {
                    id: self.record.id.clone(),
                    image_ref: self.record.image.clone().unwrap_or_default(),
                    spec,
                    labels: container_labels(&self.record),
                    stdio: io,
                })
                .await
                .map_err(backend_err)?;
        }
        self.watch_oom();
        match self.client.start(self.id()).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                let err = backend_err(e);
                let _ = self.client.delete_task(self.id()).await;
                Err(err)
            }
        }
    }

    fn oom_reported(&self) -> bool {
        self.oom.load(Ordering::SeqCst)
    }

    async fn running_pid(&self) -> Option<u32> {
        match self.client.task_state(self.id()).await {
            Ok(s) if matches!(s.status, TaskStatus::Running | TaskStatus::Stopped) => {
                if s.status == TaskStatus::Running {
                    self.watch_oom();
                }
                Some(s.pid)
            }
            _ => None,
        }
    }

    async fn wait(&self) -> Result<i32, MonitorError> {
        // containerd may restart while the container runs (an upgrade, a crash): its shim and
        // the container live on, so keep waiting until containerd answers again.
        let deadline = std::time::Instant::now() + CONTAINERD_OUTAGE;
        loop {
            match self.client.wait(self.id()).await {
                Ok(s) => return Ok(s.code as i32),
                Err(e) if is_transient(&e) && std::time::Instant::now() < deadline => {
                    tracing::warn!("waiting for {}: {e}; retrying", self.id());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(backend_err(e)),
            }
        }
    }

    async fn kill(&self, signal: i32) -> Result<(), MonitorError> {
        self.client
            .kill(self.id(), signal as u32, false)
            .await
            .map_err(backend_err)
    }

    async fn cleanup(&self) -> Result<(), MonitorError> {
        self.client
            .delete_task(self.id())
            .await
            .map(drop)
            .map_err(backend_err)
    }

    async fn remove(&self) -> Result<(), MonitorError> {
        self.client
            .delete(self.id())
            .await
            .map(drop)
            .map_err(backend_err)
    }
}
