//! Containers and tasks: create (with rollback), start, wait, kill, exec, delete, list.

use std::collections::HashMap;
use std::time::SystemTime;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
};
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest,
    StartRequest, WaitRequest,
};
use prost_types::Any;
use tokio_stream::StreamExt;
use tonic::Code;

use super::client::{valid_namespace, Client, SNAPSHOTTER};
use super::error::{map_exec_failure, CtrdError, Result};
use super::images::normalize_reference;

/// containerd's runc runtime (its Go shim runs runc; aac-shim is the monitor).
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// aac's own shim, `containerd-shim-aac-v2` (runs runc, writes the container's output
/// straight into aac's FIFOs).
pub const AAC_RUNTIME: &str = "io.containerd.aac.v2";
/// Binary name of [`AAC_RUNTIME`]'s shim.
pub const AAC_SHIM_BINARY: &str = "containerd-shim-aac-v2";
/// Chooses the runtime of new containers: `runc` (or `io.containerd.runc.v2`), `aac` (or
/// `io.containerd.aac.v2`), or an absolute path to a shim binary. `aac --oci-runtime` sets it.
pub const RUNTIME_ENV: &str = "AAC_CONTAINERD_RUNTIME";

/// The runtime name new containers get ([`RUNTIME_ENV`], else runc's). `aac` resolves to the
/// shim next to the running binary by absolute path when it is there (containerd then needs
/// nothing on its PATH), else to [`AAC_RUNTIME`] (containerd looks up
/// `containerd-shim-aac-v2` on its PATH).
pub fn runtime_name() -> String {
    let v = std::env::var(RUNTIME_ENV).unwrap_or_default();
    match v.trim() {
        "" | "runc" | RUNTIME => RUNTIME.to_string(),
        "aac" | AAC_RUNTIME => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join(AAC_SHIM_BINARY)))
            .filter(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| AAC_RUNTIME.to_string()),
        other => other.to_string(),
    }
}
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// containerd's runc shim options (`containerd.runc.v1.Options`, which containerd-client does
/// not generate): the fields aac sets.
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(string, tag = "6")]
    binary_name: String,
    #[prost(string, tag = "7")]
    root: String,
    #[prost(bool, tag = "9")]
    systemd_cgroup: bool,
}

const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// The runc binary the shim runs instead of the `runc` on containerd's PATH.
pub const RUNC_BINARY_ENV: &str = "AAC_RUNC_BINARY";

/// The runtime options of a container: runc's systemd cgroup driver when its cgroup plan says
/// so ([`crate::cgroups::CgroupPlan::systemd`]), and `runc_binary` when given. `None` (the
/// shim's defaults) when neither applies.
pub fn runtime_options(systemd_cgroup: bool, runc_binary: Option<&str>) -> Option<Any> {
    let binary_name = runc_binary.unwrap_or_default().to_string();
    if !systemd_cgroup && binary_name.is_empty() {
        return None;
    }
    let opts = RuncOptions {
        binary_name,
        root: String::new(),
        systemd_cgroup,
    };
    Some(Any {
        type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
        value: prost::Message::encode_to_vec(&opts),
    })
}

/// Where a task's standard streams go. Each is a path (FIFO or existing regular file), a
/// `file:///abs` URI or a `binary:///abs?k=v` logger URI; `None` is /dev/null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stdio {
    pub stdin: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// Allocate a pseudo terminal (stdout carries both streams).
    pub terminal: bool,
}

/// Everything needed to create a container and its task.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Container id (letters, digits, single `.`, `_`, `-` between them).
    pub id: String,
    /// Image whose unpacked snapshot becomes the root file system.
    pub image_ref: String,
    /// The complete OCI runtime spec (`root.path` should be `rootfs`).
    pub spec: oci_spec::runtime::Spec,
    /// Container labels.
    pub labels: HashMap<String, String>,
    /// Standard streams of the init process.
    pub stdio: Stdio,
    /// runc manages the cgroup through systemd (the spec's cgroups path is `slice:prefix:name`).
    pub systemd_cgroup: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; 128+n after signal n.
    pub code: u32,
    pub exited_at: Option<SystemTime>,
}

/// One container record.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub created: Option<SystemTime>,
    pub runtime: String,
}

/// Task status as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// A task's state.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub status: TaskStatus,
    pub pid: u32,
    /// Set once the task stopped.
    pub exit: Option<ExitStatus>,
}

/// One snapshot of the overlayfs snapshotter.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSummary {
    pub name: String,
    pub parent: String,
    /// `active`, `committed`, `view` or `unknown`.
    pub kind: &'static str,
}

impl Stdio {
    /// The (stdin, stdout, stderr) strings for containerd. The runc shim treats an empty
    /// stream as /dev/null only when all of them are empty; otherwise it tries to open "".
    fn uris(&self) -> (String, String, String) {
        let stdin = self.stdin.clone().unwrap_or_default();
        let mut stdout = self.stdout.clone().unwrap_or_default();
        let mut stderr = self.stderr.clone().unwrap_or_default();
        if !self.terminal && (!stdout.is_empty() || !stderr.is_empty()) {
            if stdout.is_empty() {
                stdout = "/dev/null".into();
            }
            if stderr.is_empty() {
                stderr = "/dev/null".into();
            }
        }
        (stdin, stdout, stderr)
    }
}

fn ts(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

fn not_found_ok<T>(r: Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Something `create` made that must go if a later step fails.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    Task(String),
    Snapshot(String),
    Container(String),
    Lease(String),
}

impl Undo {
    /// containerd's teardown order: task, snapshot, container, lease.
    fn rank(&self) -> u8 {
        match self {
            Undo::Task(_) => 0,
            Undo::Snapshot(_) => 1,
            Undo::Container(_) => 2,
            Undo::Lease(_) => 3,
        }
    }
}

/// Records what a multi-step operation created; [`Rollback::unwind`] removes it all in
/// teardown order, [`Rollback::disarm`] keeps it.
struct Rollback<'a> {
    client: &'a Client,
    steps: Vec<Undo>,
}

impl<'a> Rollback<'a> {
    fn new(client: &'a Client) -> Self {
        Rollback {
            client,
            steps: Vec::new(),
        }
    }

    fn push(&mut self, undo: Undo) {
        self.steps.push(undo);
    }

    /// Keeps everything; returns the lease (if any) so the caller can release it.
    fn disarm(mut self) -> Vec<Undo> {
        std::mem::take(&mut self.steps)
    }

    async fn unwind(mut self) {
        let mut steps = std::mem::take(&mut self.steps);
        steps.sort_by_key(Undo::rank);
        for step in steps {
            let r = match &step {
                Undo::Task(id) => self.client.delete_task(id).await.map(|_| ()),
                Undo::Snapshot(key) => self.client.remove_snapshot(key).await,
                Undo::Container(id) => self.client.delete_container_record(id).await,
                Undo::Lease(id) => self.client.delete_lease(id).await,
            };
            if let Err(e) = r {
                tracing::warn!(?step, error = %e, "rollback step failed");
            }
        }
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            tracing::error!(steps = ?self.steps, "rollback dropped without unwind; resources leak");
        }
    }
}

impl Client {
    /// Creates container `req.id` from its image and spec, and its task (not started).
    /// Returns the init pid. Any failure removes everything made so far.
    pub async fn create(&self, req: CreateRequest) -> Result<u32> {
        if !valid_namespace(&req.id) {
            return Err(CtrdError::Grpc {
                op: "create",
                code: Code::InvalidArgument,
                message: format!(
                    "invalid container id {:?}: use letters, digits and single '.', '_' or '-' between them",
                    req.id
                ),
            });
        }
        let image = normalize_reference(&req.image_ref)?;
        let parent = self.image_snapshot_parent(&image).await?;
        let spec_json = serde_json::to_vec(&req.spec)
            .map_err(|e| CtrdError::json("serialize runtime spec", e))?;

        let mut rb = Rollback::new(self);
        let result = self
            .create_steps(&mut rb, &req, &image, &parent, spec_json)
            .await;
        match result {
            Ok(pid) => {
                for step in rb.disarm() {
                    if let Undo::Lease(lease) = step {
                        self.delete_lease(&lease).await?;
                    }
                }
                tracing::debug!(id = %req.id, pid, "container created");
                Ok(pid)
            }
            Err(e) => {
                rb.unwind().await;
                Err(e)
            }
        }
    }

    async fn create_steps(
        &self,
        rb: &mut Rollback<'_>,
        req: &CreateRequest,
        image: &str,
        parent: &str,
        spec_json: Vec<u8>,
    ) -> Result<u32> {
        let id = &req.id;
        let lease = self.create_lease_labeled("create", Some(id)).await?;
        rb.push(Undo::Lease(lease.clone()));

        let prepare = self.req_leased(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            },
            &lease,
        )?;
        let mounts = match self.snapshots().prepare(prepare).await {
            Ok(r) => r.into_inner().mounts,
            Err(s) if s.code() == Code::AlreadyExists => {
                return Err(CtrdError::AlreadyExists {
                    kind: "container",
                    name: id.clone(),
                })
            }
            Err(s) => return Err(CtrdError::grpc("Snapshots.Prepare", s)),
        };
        rb.push(Undo::Snapshot(id.clone()));

        let container = Container {
            id: id.clone(),
            labels: req.labels.clone(),
            image: image.to_string(),
            runtime: Some(Runtime {
                name: runtime_name(),
                options: runtime_options(
                    req.systemd_cgroup,
                    std::env::var(RUNC_BINARY_ENV)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .as_deref(),
                ),
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.clone(),
            ..Default::default()
        };
        let create = self.req_leased(
            CreateContainerRequest {
                container: Some(container),
            },
            &lease,
        )?;
        match self.containers().create(create).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                return Err(CtrdError::AlreadyExists {
                    kind: "container",
                    name: id.clone(),
                })
            }
            Err(s) => return Err(CtrdError::grpc("Containers.Create", s)),
        }
        rb.push(Undo::Container(id.clone()));

        // A failed Tasks.Create may still leave a task record behind.
        rb.push(Undo::Task(id.clone()));
        let (stdin, stdout, stderr) = req.stdio.uris();
        let task = self.req(CreateTaskRequest {
            container_id: id.clone(),
            rootfs: mounts,
            stdin,
            stdout,
            stderr,
            terminal: req.stdio.terminal,
            ..Default::default()
        });
        let pid = self
            .tasks()
            .create(task)
            .await
            .map_err(|s| map_exec_failure("Tasks.Create", id, s))?
            .into_inner()
            .pid;
        Ok(pid)
    }

    /// Creates a new task for an existing container (after its previous task was deleted),
    /// on the container's own snapshot. Returns the init pid.
    pub async fn create_task(&self, id: &str, stdio: &Stdio) -> Result<u32> {
        let record = self
            .get_container(id)
            .await?
            .ok_or_else(|| CtrdError::NotFound {
                kind: "container",
                name: id.to_string(),
            })?;
        let key = if record.snapshot_key.is_empty() {
            id.to_string()
        } else {
            record.snapshot_key.clone()
        };
        let snapshots = self.snapshots();
        let mounts = self
            .retry("Snapshots.Mounts", || {
                let mut s = snapshots.clone();
                let req = self.req(MountsRequest {
                    snapshotter: record.snapshotter.clone(),
                    key: key.clone(),
                });
                async move { s.mounts(req).await }
            })
            .await?
            .mounts;
        let (stdin, stdout, stderr) = stdio.uris();
        let task = self.req(CreateTaskRequest {
            container_id: id.to_string(),
            rootfs: mounts,
            stdin,
            stdout,
            stderr,
            terminal: stdio.terminal,
            ..Default::default()
        });
        match self.tasks().create(task).await {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => {
                let err = map_exec_failure("Tasks.Create", id, s);
                // A failed create may leave a task record behind.
                let _ = self.delete_task(id).await;
                Err(err)
            }
        }
    }

    /// Starts the created task; returns its pid.
    pub async fn start(&self, id: &str) -> Result<u32> {
        self.start_process(id, "").await
    }

    async fn start_process(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = self.req(StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        match self.tasks().start(req).await {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) if s.code() == Code::NotFound => Err(CtrdError::NotFound {
                kind: "task",
                name: id.to_string(),
            }),
            Err(s) => Err(map_exec_failure("Tasks.Start", id, s)),
        }
    }

    /// Waits until the task exits.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus> {
        self.wait_process(id, "").await
    }

    async fn wait_process(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        let tasks = self.tasks();
        let r = self
            .retry("Tasks.Wait", || {
                let mut t = tasks.clone();
                let req = self.req(WaitRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                });
                async move { t.wait(req).await }
            })
            .await?;
        Ok(ExitStatus {
            code: r.exit_status,
            exited_at: ts(r.exited_at),
        })
    }

    /// Sends `signal` to the init process (`all`: to every process of the container).
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.kill_process(id, "", signal, all).await
    }

    /// Sends `signal` to exec process `exec_id`.
    pub async fn kill_exec(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        self.kill_process(id, exec_id, signal, false).await
    }

    async fn kill_process(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let tasks = self.tasks();
        self.retry("Tasks.Kill", || {
            let mut t = tasks.clone();
            let req = self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
                all,
            });
            async move { t.kill(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes the task but keeps the container and its snapshot (for a restart); NotFound is
    /// `Ok(None)`.
    pub async fn delete_task(&self, id: &str) -> Result<Option<ExitStatus>> {
        let tasks = self.tasks();
        let r = self
            .retry("Tasks.Delete", || {
                let mut t = tasks.clone();
                let req = self.req(DeleteTaskRequest {
                    container_id: id.to_string(),
                });
                async move { t.delete(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(Some(ExitStatus {
                code: r.exit_status,
                exited_at: ts(r.exited_at),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            // containerd 1.6: Unknown "cannot delete a running process"; later: FailedPrecondition.
            Err(CtrdError::Grpc { code, message, .. })
                if code == Code::FailedPrecondition || message.contains("running process") =>
            {
                Err(CtrdError::TaskRunning(id.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_container_record(&self, id: &str) -> Result<()> {
        let containers = self.containers();
        not_found_ok(
            self.retry("Containers.Delete", || {
                let mut c = containers.clone();
                let req = self.req(DeleteContainerRequest { id: id.to_string() });
                async move { c.delete(req).await }
            })
            .await,
        )
    }

    async fn get_container(&self, id: &str) -> Result<Option<Container>> {
        let containers = self.containers();
        let r = self
            .retry("Containers.Get", || {
                let mut c = containers.clone();
                let req = self.req(GetContainerRequest { id: id.to_string() });
                async move { c.get(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(r.container),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a stopped container: task, then snapshot, then container record. Parts that
    /// are already gone count as removed. Returns the task's exit status if it had one.
    /// Fails with [`CtrdError::TaskRunning`] while the task runs.
    pub async fn delete(&self, id: &str) -> Result<Option<ExitStatus>> {
        let record = self.get_container(id).await?;
        let exit = self.delete_task(id).await;
        tracing::debug!(id, ?exit, "Tasks.Delete");
        let exit = exit?;
        let key = record
            .as_ref()
            .map(|c| c.snapshot_key.clone())
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| id.to_string());
        let snapshotter = record
            .as_ref()
            .map(|c| c.snapshotter.as_str())
            .unwrap_or(SNAPSHOTTER);
        if snapshotter == SNAPSHOTTER {
            self.remove_snapshot(&key).await?;
        } else {
            tracing::warn!(
                id,
                snapshotter,
                "container uses another snapshotter; its snapshot is left to GC"
            );
        }
        self.delete_container_record(id).await?;
        Ok(exit)
    }

    /// All containers of the namespace.
    pub async fn list_containers(&self) -> Result<Vec<ContainerSummary>> {
        let containers = self.containers();
        let r = self
            .retry("Containers.List", || {
                let mut c = containers.clone();
                let req = self.req(ListContainersRequest { filters: vec![] });
                async move { c.list(req).await }
            })
            .await?;
        Ok(r.containers
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id,
                image: c.image,
                labels: c.labels,
                created: ts(c.created_at),
                runtime: c.runtime.map(|r| r.name).unwrap_or_default(),
            })
            .collect())
    }

    /// All snapshots of the overlayfs snapshotter in the namespace.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotSummary>> {
        let req = self.req(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            filters: vec![],
        });
        let mut stream = self
            .snapshots()
            .list(req)
            .await
            .map_err(|s| CtrdError::grpc("Snapshots.List", s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.next().await {
            let r = r.map_err(|s| CtrdError::grpc("Snapshots.List", s))?;
            for i in r.info {
                out.push(SnapshotSummary {
                    name: i.name,
                    parent: i.parent,
                    kind: match i.kind {
                        1 => "view",
                        2 => "active",
                        3 => "committed",
                        _ => "unknown",
                    },
                });
            }
        }
        Ok(out)
    }

    /// The task's state, or NotFound if it has no task.
    pub async fn task_state(&self, id: &str) -> Result<TaskState> {
        let tasks = self.tasks();
        let r = self
            .retry("Tasks.Get", || {
                let mut t = tasks.clone();
                let req = self.req(GetRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                });
                async move { t.get(req).await }
            })
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    CtrdError::NotFound {
                        kind: "task",
                        name: id.to_string(),
                    }
                } else {
                    e
                }
            })?;
        let p = r.process.unwrap_or_default();
        let status = match p.status {
            1 => TaskStatus::Created,
            2 => TaskStatus::Running,
            3 => TaskStatus::Stopped,
            4 => TaskStatus::Paused,
            5 => TaskStatus::Pausing,
            _ => TaskStatus::Unknown,
        };
        Ok(TaskState {
            status,
            pid: p.pid,
            exit: (status == TaskStatus::Stopped).then(|| ExitStatus {
                code: p.exit_status,
                exited_at: ts(p.exited_at),
            }),
        })
    }

    /// Runs an extra process `exec_id` in the running container and starts it; returns its
    /// pid and its exit, waited for from before it started (so an exit is seen even when the
    /// container ends right after it and its task is gone by the time one would ask). Then
    /// [`Client::delete_exec`].
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: Stdio,
    ) -> Result<(u32, ExecExit)> {
        let spec = serde_json::to_vec(process)
            .map_err(|e| CtrdError::json("serialize process spec", e))?;
        let (stdin, stdout, stderr) = stdio.uris();
        let req = self.req(ExecProcessRequest {
            container_id: id.to_string(),
            stdin,
            stdout,
            stderr,
            terminal: stdio.terminal,
            spec: Some(Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: spec,
            }),
            exec_id: exec_id.to_string(),
        });
        self.tasks()
            .exec(req)
            .await
            .map_err(|s| map_exec_failure("Tasks.Exec", id, s))?;
        let exit = {
            let client = self.clone();
            let (id, exec_id) = (id.to_string(), exec_id.to_string());
            ExecExit(tokio::spawn(async move {
                client.wait_process(&id, &exec_id).await
            }))
        };
        match self.start_process(id, exec_id).await {
            Ok(pid) => Ok((pid, exit)),
            Err(e) => {
                if let Err(de) = self.delete_exec(id, exec_id).await {
                    tracing::warn!(id, exec_id, error = %de, "could not remove failed exec process");
                }
                Err(e)
            }
        }
    }

    /// Removes a finished exec process; NotFound is success.
    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<Option<ExitStatus>> {
        let tasks = self.tasks();
        let r = self
            .retry("Tasks.DeleteProcess", || {
                let mut t = tasks.clone();
                let req = self.req(DeleteProcessRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                });
                async move { t.delete_process(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(Some(ExitStatus {
                code: r.exit_status,
                exited_at: ts(r.exited_at),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resizes the pseudo terminal of the init process (`exec_id` empty) or an exec process.
    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let tasks = self.tasks();
        self.retry("Tasks.ResizePty", || {
            let mut t = tasks.clone();
            let req = self.req(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            });
            async move { t.resize_pty(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Freezes every process of the task (the cgroup freezer, through runc).
    pub async fn pause(&self, id: &str) -> Result<()> {
        let tasks = self.tasks();
        self.retry("Tasks.Pause", || {
            let mut t = tasks.clone();
            let req = self.req(PauseTaskRequest {
                container_id: id.to_string(),
            });
            async move { t.pause(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Thaws a paused task.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let tasks = self.tasks();
        self.retry("Tasks.Resume", || {
            let mut t = tasks.clone();
            let req = self.req(ResumeTaskRequest {
                container_id: id.to_string(),
            });
            async move { t.resume(req).await }
        })
        .await
        .map(|_| ())
    }

    /// Closes the stdin of the init process (`exec_id` empty) or an exec process.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let tasks = self.tasks();
        self.retry("Tasks.CloseIO", || {
            let mut t = tasks.clone();
            let req = self.req(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            });
            async move { t.close_io(req).await }
        })
        .await
        .map(|_| ())
    }
}

impl Client {
    /// Watch containerd's `/tasks/oom` events for container `id` and raise `flag` when one
    /// arrives. Under the systemd cgroup driver the container's scope is gone as soon as its
    /// last process exits, so its OOM counter cannot be read afterwards: the event is the
    /// reliable signal. The watch ends when `flag`'s owner drops the returned handle.
    pub fn watch_oom(
        &self,
        id: &str,
        flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        use containerd_client::services::v1::SubscribeRequest;
        use prost::Message;

        let mut events = self.events();
        let req = SubscribeRequest {
            filters: vec![format!(
                "topic==\"/tasks/oom\",namespace==\"{}\"",
                self.namespace()
            )],
        };
        let id = id.to_string();
        tokio::spawn(async move {
            // containerd answers the subscription only with its first event: never await
            // this before the task exists.
            let Ok(stream) = events.subscribe(req).await else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Some(Ok(envelope)) = stream.next().await {
                let Some(any) = envelope.event else { continue };
                if let Ok(oom) = containerd_client::events::TaskOom::decode(any.value.as_slice()) {
                    if oom.container_id == id {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        })
    }
}

/// The exit of an exec process (see [`Client::exec`]); dropping it stops waiting.
pub struct ExecExit(tokio::task::JoinHandle<Result<ExitStatus>>);

impl ExecExit {
    pub async fn wait(mut self) -> Result<ExitStatus> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) => Err(CtrdError::Grpc {
                op: "Tasks.Wait",
                code: tonic::Code::Aborted,
                message: e.to_string(),
            }),
        }
    }
}

impl Drop for ExecExit {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_follow_the_cgroup_plan() {
        assert_eq!(runtime_options(false, None), None);
        let any = runtime_options(true, None).unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        // field 9 (systemd_cgroup), varint 1
        assert_eq!(any.value, vec![9 << 3, 1]);
        let any = runtime_options(false, Some("/r")).unwrap();
        // field 6 (binary_name), length-delimited "/r"
        assert_eq!(any.value, vec![6 << 3 | 2, 2, b'/', b'r']);
        let decoded: RuncOptions = prost::Message::decode(any.value.as_slice()).unwrap();
        assert!(!decoded.systemd_cgroup);
    }

    #[test]
    fn undo_order_is_teardown_order() {
        let mut v = vec![
            Undo::Lease("l".into()),
            Undo::Snapshot("s".into()),
            Undo::Container("c".into()),
            Undo::Task("t".into()),
        ];
        v.sort_by_key(Undo::rank);
        assert_eq!(
            v,
            vec![
                Undo::Task("t".into()),
                Undo::Snapshot("s".into()),
                Undo::Container("c".into()),
                Undo::Lease("l".into()),
            ]
        );
    }
}
