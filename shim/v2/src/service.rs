//! The shim v2 task service: one container (its init process and its execs) per shim.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::api;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageDyn, MessageField};
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::types::task::{ProcessInfo, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::synchronous::monitor::monitor_subscribe;
use containerd_shim::{Config, Context, DeleteResponse, ExitSignal, Flags, TtrpcContext};

use crate::oom::OomWatch;
use crate::runc::{self, ProcIo, Runc};
use crate::stdio::{self, ConsoleSocket, StdinWriter};

pub const RUNTIME_ID: &str = "io.containerd.aac.v2";
/// What the shim keeps in the bundle for `delete` after it died.
const SHIM_STATE: &str = "aac-shim.json";
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
const TASK_EXIT: &str = "/tasks/exit";
const TASK_OOM: &str = "/tasks/oom";

type TResult<T> = ttrpc::Result<T>;

fn status_err(code: ttrpc::Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn unknown(msg: impl Into<String>) -> ttrpc::Error {
    status_err(ttrpc::Code::UNKNOWN, msg)
}

fn not_found(msg: impl Into<String>) -> ttrpc::Error {
    status_err(ttrpc::Code::NOT_FOUND, msg)
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Paused,
    Stopped,
}

struct Proc {
    pid: u32,
    state: State,
    exit_code: u32,
    exited_at: Option<SystemTime>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    /// Exec processes: the process spec (JSON) until started.
    spec: Vec<u8>,
    console: Option<File>,
    stdin_writer: Option<StdinWriter>,
}

impl Proc {
    fn new(stdin: String, stdout: String, stderr: String, terminal: bool) -> Proc {
        Proc {
            pid: 0,
            state: State::Created,
            exit_code: 0,
            exited_at: None,
            stdin,
            stdout,
            stderr,
            terminal,
            spec: Vec::new(),
            console: None,
            stdin_writer: None,
        }
    }

    fn exit(&mut self, code: u32) {
        self.state = State::Stopped;
        self.exit_code = code;
        self.exited_at = Some(SystemTime::now());
        self.console = None;
    }
}

#[derive(Default)]
struct Inner {
    id: String,
    bundle: PathBuf,
    runc: Option<Runc>,
    /// Key "" is the init process.
    procs: HashMap<String, Proc>,
    /// Exits of pids not (yet) known: a short exec can end before its pid file is read.
    unclaimed: VecDeque<(u32, u32)>,
    rootfs_mounted: bool,
    /// The container's OOM counter, from its creation on.
    oom: Option<Arc<OomWatch>>,
}

impl Inner {
    fn runc(&self) -> TResult<Runc> {
        self.runc
            .clone()
            .ok_or_else(|| status_err(ttrpc::Code::FAILED_PRECONDITION, "no container"))
    }

    fn proc_mut(&mut self, exec_id: &str) -> TResult<&mut Proc> {
        self.procs
            .get_mut(exec_id)
            .ok_or_else(|| not_found(format!("process {exec_id:?} does not exist")))
    }

    fn take_unclaimed(&mut self, pid: u32) -> Option<u32> {
        let i = self.unclaimed.iter().position(|(p, _)| *p == pid)?;
        self.unclaimed.remove(i).map(|(_, c)| c)
    }
}

#[derive(Clone)]
pub struct Service {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Service {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: containerd_shim::StartOpts) -> containerd_shim::Result<String> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        Ok(address)
    }

    /// The shim died: kill and delete what runc still knows, unmount the root file system.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&self.bundle)
        };
        let runc = std::fs::read(bundle.join(SHIM_STATE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Runc>(&b).ok())
            .unwrap_or_else(|| default_runc(&self.namespace, None, &bundle));
        if let Err(e) = runc.run(&["delete", "--force", &self.id], ProcIo::default(), false) {
            log::warn!("{e}");
        }
        unmount_rootfs(&bundle);
        let mut resp = DeleteResponse::new();
        resp.exit_status = 128 + libc::SIGKILL as u32;
        resp.exited_at = MessageField::some(timestamp(SystemTime::now()));
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let svc = TaskService {
            namespace: self.namespace.clone(),
            inner: Arc::new((Mutex::new(Inner::default()), Condvar::new())),
            publisher: Arc::new(publisher),
            exit: self.exit.clone(),
        };
        svc.watch_exits();
        svc
    }
}

fn default_runc(namespace: &str, opts: Option<&api::Options>, bundle: &Path) -> Runc {
    let binary = opts
        .map(|o| o.binary_name.clone())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "runc".to_string());
    let root = opts
        .map(|o| o.root.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| runc::DEFAULT_ROOT.to_string());
    Runc {
        binary,
        root: Path::new(&root)
            .join(namespace)
            .to_string_lossy()
            .into_owned(),
        systemd_cgroup: opts.is_some_and(|o| o.systemd_cgroup),
        log_dir: bundle.to_path_buf(),
    }
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Some(p) = rootfs.to_str() {
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(p), libc::MNT_DETACH) {
            log::warn!("unmounting {p}: {e}");
        }
    }
}

#[derive(Clone)]
pub struct TaskService {
    namespace: String,
    inner: Arc<(Mutex<Inner>, Condvar)>,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
}

impl TaskService {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
        {
            log::warn!("publishing {topic}: {e}");
        }
    }

    /// Every child the signal thread reaps: mark the process it was, tell containerd.
    fn watch_exits(&self) {
        let Ok(sub) = monitor_subscribe(Topic::All) else {
            log::error!("cannot watch process exits");
            return;
        };
        let svc = self.clone();
        let _ = std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                for ev in sub.rx.iter() {
                    let Subject::Pid(pid) = ev.subject else {
                        continue;
                    };
                    svc.process_exited(pid as u32, ev.exit_code as u32);
                }
            });
    }

    fn process_exited(&self, pid: u32, code: u32) {
        let event = {
            let mut inner = self.lock();
            let id = inner.id.clone();
            let found = inner
                .procs
                .iter_mut()
                .find(|(_, p)| p.pid == pid && p.pid != 0 && p.state != State::Stopped);
            match found {
                Some((exec_id, p)) => {
                    p.exit(code);
                    Some(TaskExit {
                        container_id: id.clone(),
                        id: if exec_id.is_empty() {
                            id
                        } else {
                            exec_id.clone()
                        },
                        pid,
                        exit_status: code,
                        exited_at: MessageField::some(timestamp(
                            p.exited_at.unwrap_or_else(SystemTime::now),
                        )),
                        ..Default::default()
                    })
                }
                None => {
                    if inner.unclaimed.len() >= 64 {
                        inner.unclaimed.pop_front();
                    }
                    inner.unclaimed.push_back((pid, code));
                    None
                }
            }
        };
        if let Some(e) = event {
            self.inner.1.notify_all();
            // An OOM kill goes out before the exit it caused (a kill the watch thread has not
            // reported yet, or any on cgroup v1).
            if e.id == e.container_id {
                let oom = self.lock().oom.clone();
                if oom.is_some_and(|w| w.new_kills()) {
                    self.publish_oom(&e.container_id);
                }
            }
            self.publish(TASK_EXIT, Box::new(e));
        }
    }

    fn publish_oom(&self, id: &str) {
        log::info!("container {id} had an OOM kill");
        self.publish(
            TASK_OOM,
            Box::new(TaskOOM {
                container_id: id.to_string(),
                ..Default::default()
            }),
        );
    }

    /// Register a started process's pid; returns its exit event when it already ended.
    fn set_pid(&self, exec_id: &str, pid: u32, state: State) -> Option<TaskExit> {
        let mut inner = self.lock();
        let id = inner.id.clone();
        let early = inner.take_unclaimed(pid);
        let p = inner.procs.get_mut(exec_id)?;
        p.pid = pid;
        if p.state == State::Stopped {
            // It ended while runc was starting it; its exit event is out already.
            return None;
        }
        p.state = state;
        let code = early?;
        p.exit(code);
        self.inner.1.notify_all();
        Some(TaskExit {
            container_id: id.clone(),
            id: if exec_id.is_empty() {
                id
            } else {
                exec_id.to_string()
            },
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    /// Open a process's streams; `console` gets runc's terminal socket when it has one.
    fn open_io(
        &self,
        p: (&str, &str, &str, bool),
        dir: &Path,
        name: &str,
    ) -> TResult<(ProcIo, Option<StdinWriter>, Option<ConsoleSocket>)> {
        let (stdin, stdout, stderr, terminal) = p;
        if terminal {
            let sock = ConsoleSocket::new(dir, &format!("{name}.console")).map_err(unknown)?;
            return Ok((ProcIo::default(), None, Some(sock)));
        }
        let mut io = ProcIo {
            stdout: stdio::open_output(stdout).map_err(unknown)?,
            stderr: stdio::open_output(stderr).map_err(unknown)?,
            ..Default::default()
        };
        let mut writer = None;
        if let Some((r, w)) = stdio::open_stdin(stdin).map_err(unknown)? {
            io.stdin = Some(r);
            writer = Some(w);
        }
        Ok((io, writer, None))
    }

    /// After runc started a terminal process: take its master and copy it.
    fn attach_console(
        &self,
        exec_id: &str,
        sock: Option<ConsoleSocket>,
        stdin: &str,
        stdout: &str,
    ) -> TResult<()> {
        let Some(sock) = sock else { return Ok(()) };
        let master = sock.receive().map_err(unknown)?;
        let out = stdio::open_output(stdout).map_err(unknown)?;
        stdio::copy_console(&master, stdin, out).map_err(unknown)?;
        if let Ok(p) = self.lock().proc_mut(exec_id) {
            p.console = Some(master);
        }
        Ok(())
    }
}

fn socket_dir(bundle: &Path) -> PathBuf {
    // A console socket path must fit sun_path (108 bytes): bundle paths with 64-character
    // ids do not.
    let short = PathBuf::from(format!("/run/aac-shim-{}", std::process::id()));
    if bundle.as_os_str().len() + 40 < 100 {
        bundle.to_path_buf()
    } else {
        let _ = std::fs::create_dir_all(&short);
        short
    }
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TResult<api::CreateTaskResponse> {
        let bundle = PathBuf::from(&req.bundle);
        let opts = req
            .options
            .as_ref()
            .filter(|a| a.type_url.ends_with(RUNC_OPTIONS_TYPE))
            .and_then(|a| api::Options::parse_from_bytes(&a.value).ok());
        let runc = default_runc(&self.namespace, opts.as_ref(), &bundle);
        if let Ok(b) = serde_json::to_vec(&runc) {
            let _ = std::fs::write(bundle.join(SHIM_STATE), b);
        }
        let rootfs = bundle.join("rootfs");
        let mut mounted = false;
        for m in &req.rootfs {
            if !mounted {
                let _ = std::fs::create_dir_all(&rootfs);
            }
            containerd_shim::mount::mount_rootfs(
                Some(m.type_.as_str()),
                Some(m.source.as_str()),
                &m.options,
                &rootfs,
            )
            .map_err(|e| {
                if mounted {
                    unmount_rootfs(&bundle);
                }
                unknown(format!("mounting the root file system: {e}"))
            })?;
            mounted = true;
        }
        {
            let mut inner = self.lock();
            inner.id = req.id.clone();
            inner.bundle = bundle.clone();
            inner.runc = Some(runc.clone());
            inner.rootfs_mounted = mounted;
            inner.procs.insert(
                String::new(),
                Proc::new(
                    req.stdin.clone(),
                    req.stdout.clone(),
                    req.stderr.clone(),
                    req.terminal,
                ),
            );
        }
        let fail = |e: ttrpc::Error| {
            self.lock().procs.remove("");
            if mounted {
                unmount_rootfs(&bundle);
            }
            e
        };
        let (io, writer, console) = self
            .open_io(
                (&req.stdin, &req.stdout, &req.stderr, req.terminal),
                &socket_dir(&bundle),
                "init",
            )
            .map_err(fail)?;
        let pid_file = bundle.join("init.pid");
        let bundle_s = bundle.to_string_lossy().into_owned();
        let pid_s = pid_file.to_string_lossy().into_owned();
        let mut args = vec!["create", "--bundle", &bundle_s, "--pid-file", &pid_s];
        let sock_s = console
            .as_ref()
            .map(|c| c.path.to_string_lossy().into_owned());
        if let Some(s) = &sock_s {
            args.push("--console-socket");
            args.push(s);
        }
        args.push(&req.id);
        if let Err(e) = runc.run(&args, io, false) {
            let _ = runc.run(&["delete", "--force", &req.id], ProcIo::default(), false);
            return Err(fail(unknown(e)));
        }
        let pid = runc::read_pid(&pid_file).map_err(|e| fail(unknown(e)))?;
        if let Err(e) = self.attach_console("", console, &req.stdin, &req.stdout) {
            let _ = runc.run(&["delete", "--force", &req.id], ProcIo::default(), false);
            return Err(fail(e));
        }
        let oom = OomWatch::for_pid(pid);
        if let Some(w) = &oom {
            let svc = self.clone();
            let id = req.id.clone();
            w.spawn(move || svc.publish_oom(&id));
        }
        {
            let mut inner = self.lock();
            inner.oom = oom;
            if let Ok(p) = inner.proc_mut("") {
                p.pid = pid;
                p.stdin_writer = writer;
            }
        }
        self.publish(
            "/tasks/create",
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> TResult<api::StartResponse> {
        let (runc, id, bundle) = {
            let inner = self.lock();
            (inner.runc()?, inner.id.clone(), inner.bundle.clone())
        };
        if req.exec_id.is_empty() {
            let pid = {
                let mut inner = self.lock();
                let p = inner.proc_mut("")?;
                if p.state != State::Created {
                    return Err(status_err(
                        ttrpc::Code::FAILED_PRECONDITION,
                        "the task is not in the created state",
                    ));
                }
                p.pid
            };
            runc.run(&["start", &id], ProcIo::default(), false)
                .map_err(unknown)?;
            let early = self.set_pid("", pid, State::Running);
            self.publish(
                "/tasks/start",
                Box::new(TaskStart {
                    container_id: id,
                    pid,
                    ..Default::default()
                }),
            );
            if let Some(e) = early {
                self.publish(TASK_EXIT, Box::new(e));
            }
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }
        let exec_id = req.exec_id;
        let (spec, stdin, stdout, stderr, terminal) = {
            let mut inner = self.lock();
            let p = inner.proc_mut(&exec_id)?;
            if p.state != State::Created || p.pid != 0 {
                return Err(status_err(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("exec {exec_id} was already started"),
                ));
            }
            (
                p.spec.clone(),
                p.stdin.clone(),
                p.stdout.clone(),
                p.stderr.clone(),
                p.terminal,
            )
        };
        let spec_path = bundle.join(format!("{exec_id}.process.json"));
        let pid_path = bundle.join(format!("{exec_id}.pid"));
        std::fs::write(&spec_path, &spec).map_err(|e| unknown(format!("exec spec: {e}")))?;
        let result = (|| -> TResult<u32> {
            let (io, writer, console) = self.open_io(
                (&stdin, &stdout, &stderr, terminal),
                &socket_dir(&bundle),
                &exec_id,
            )?;
            let spec_s = spec_path.to_string_lossy().into_owned();
            let pid_s = pid_path.to_string_lossy().into_owned();
            let mut args = vec![
                "exec",
                "--detach",
                "--process",
                &spec_s,
                "--pid-file",
                &pid_s,
            ];
            let sock_s = console
                .as_ref()
                .map(|c| c.path.to_string_lossy().into_owned());
            if let Some(s) = &sock_s {
                args.push("--console-socket");
                args.push(s);
            }
            args.push(&id);
            runc.run(&args, io, false).map_err(unknown)?;
            let pid = runc::read_pid(&pid_path).map_err(unknown)?;
            self.attach_console(&exec_id, console, &stdin, &stdout)?;
            if let Ok(p) = self.lock().proc_mut(&exec_id) {
                p.stdin_writer = writer;
            }
            Ok(pid)
        })();
        let _ = std::fs::remove_file(&spec_path);
        let _ = std::fs::remove_file(&pid_path);
        let pid = result?;
        let early = self.set_pid(&exec_id, pid, State::Running);
        self.publish(
            "/tasks/exec-started",
            Box::new(TaskExecStarted {
                container_id: id,
                exec_id,
                pid,
                ..Default::default()
            }),
        );
        if let Some(e) = early {
            self.publish(TASK_EXIT, Box::new(e));
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> TResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut inner = self.lock();
            let p = inner.proc_mut(&req.exec_id)?;
            if p.state == State::Running {
                return Err(status_err(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("exec {} is running", req.exec_id),
                ));
            }
            let p = inner
                .procs
                .remove(&req.exec_id)
                .ok_or_else(|| not_found("no such exec"))?;
            return Ok(DeleteResponse {
                pid: p.pid,
                exit_status: p.exit_code,
                exited_at: MessageField::from_option(p.exited_at.map(timestamp)),
                ..Default::default()
            });
        }
        let (runc, id, bundle, state) = {
            let mut inner = self.lock();
            let runc = inner.runc()?;
            let state = inner.proc_mut("")?.state;
            (runc, inner.id.clone(), inner.bundle.clone(), state)
        };
        if matches!(state, State::Running | State::Paused) {
            return Err(status_err(
                ttrpc::Code::FAILED_PRECONDITION,
                "the task is running",
            ));
        }
        if let Err(e) = runc.run(&["delete", "--force", &id], ProcIo::default(), false) {
            log::warn!("{e}");
        }
        let p = {
            let mut inner = self.lock();
            if std::mem::take(&mut inner.rootfs_mounted) {
                unmount_rootfs(&bundle);
            }
            inner.procs.remove("")
        };
        let Some(p) = p else {
            return Err(not_found("the task was deleted"));
        };
        let _ = std::fs::remove_file(bundle.join("init.pid"));
        let exited_at = timestamp(p.exited_at.unwrap_or_else(SystemTime::now));
        self.publish(
            "/tasks/delete",
            Box::new(TaskDelete {
                container_id: id.clone(),
                pid: p.pid,
                exit_status: p.exit_code,
                exited_at: MessageField::some(exited_at.clone()),
                id,
                ..Default::default()
            }),
        );
        Ok(DeleteResponse {
            pid: p.pid,
            exit_status: p.exit_code,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> TResult<api::StateResponse> {
        let mut inner = self.lock();
        let id = inner.id.clone();
        let bundle = inner.bundle.to_string_lossy().into_owned();
        let p = inner.proc_mut(&req.exec_id)?;
        let status = match p.state {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped => Status::STOPPED,
        };
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                id
            } else {
                req.exec_id.clone()
            },
            bundle,
            pid: p.pid,
            status: status.into(),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: p.exit_code,
            exited_at: MessageField::from_option(p.exited_at.map(timestamp)),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, _req: api::PidsRequest) -> TResult<api::PidsResponse> {
        let (runc, id) = {
            let inner = self.lock();
            (inner.runc()?, inner.id.clone())
        };
        let out = runc
            .run(&["ps", "--format", "json", &id], ProcIo::default(), true)
            .map_err(unknown)?;
        let pids: Vec<u32> = serde_json::from_slice(&out).unwrap_or_default();
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TResult<api::Empty> {
        let (runc, id) = {
            let inner = self.lock();
            (inner.runc()?, inner.id.clone())
        };
        runc.run(&["pause", &id], ProcIo::default(), false)
            .map_err(unknown)?;
        if let Ok(p) = self.lock().proc_mut("") {
            p.state = State::Paused;
        }
        Ok(api::Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TResult<api::Empty> {
        let (runc, id) = {
            let inner = self.lock();
            (inner.runc()?, inner.id.clone())
        };
        runc.run(&["resume", &id], ProcIo::default(), false)
            .map_err(unknown)?;
        if let Ok(p) = self.lock().proc_mut("") {
            if p.state == State::Paused {
                p.state = State::Running;
            }
        }
        Ok(api::Empty::new())
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TResult<api::Empty> {
        let (runc, id, pid, state) = {
            let mut inner = self.lock();
            let runc = inner.runc()?;
            let id = inner.id.clone();
            let p = inner.proc_mut(&req.exec_id)?;
            (runc, id, p.pid, p.state)
        };
        if state == State::Stopped {
            return Err(not_found("process already finished"));
        }
        if req.exec_id.is_empty() {
            let sig = req.signal.to_string();
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.push(&id);
            args.push(&sig);
            return match runc.run(&args, ProcIo::default(), false) {
                Ok(_) => Ok(api::Empty::new()),
                Err(e) if e.contains("not running") || e.contains("does not exist") => {
                    Err(not_found("process already finished"))
                }
                Err(e) => Err(unknown(e)),
            };
        }
        if pid == 0 {
            return Err(status_err(
                ttrpc::Code::FAILED_PRECONDITION,
                "the exec was not started",
            ));
        }
        // SAFETY: kill(2) with a pid this shim started and has not yet reaped.
        if unsafe { libc::kill(pid as i32, req.signal as i32) } != 0 {
            return Err(not_found("process already finished"));
        }
        Ok(api::Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TResult<api::Empty> {
        let id = {
            let mut inner = self.lock();
            if inner.procs.contains_key(&req.exec_id) || req.exec_id.is_empty() {
                return Err(status_err(
                    ttrpc::Code::ALREADY_EXISTS,
                    format!("exec {:?} already exists", req.exec_id),
                ));
            }
            let init = inner.proc_mut("")?;
            if init.state == State::Stopped {
                return Err(status_err(
                    ttrpc::Code::FAILED_PRECONDITION,
                    "the container is not running",
                ));
            }
            let mut p = Proc::new(
                req.stdin.clone(),
                req.stdout.clone(),
                req.stderr.clone(),
                req.terminal,
            );
            p.spec = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            inner.procs.insert(req.exec_id.clone(), p);
            inner.id.clone()
        };
        self.publish(
            "/tasks/exec-added",
            Box::new(TaskExecAdded {
                container_id: id,
                exec_id: req.exec_id,
                ..Default::default()
            }),
        );
        Ok(api::Empty::new())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TResult<api::Empty> {
        let mut inner = self.lock();
        let p = inner.proc_mut(&req.exec_id)?;
        if let Some(c) = &p.console {
            stdio::resize(c, req.width, req.height).map_err(unknown)?;
        }
        Ok(api::Empty::new())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TResult<api::Empty> {
        let mut inner = self.lock();
        let p = inner.proc_mut(&req.exec_id)?;
        if let Some(w) = p.stdin_writer.take() {
            stdio::close_stdin(&p.stdin, &w);
        }
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TResult<api::Empty> {
        let (runc, id, bundle) = {
            let inner = self.lock();
            (inner.runc()?, inner.id.clone(), inner.bundle.clone())
        };
        let Some(res) = req.resources.as_ref() else {
            return Ok(api::Empty::new());
        };
        let path = bundle.join("update.json");
        std::fs::write(&path, &res.value).map_err(|e| unknown(format!("update: {e}")))?;
        let path_s = path.to_string_lossy().into_owned();
        let r = runc.run(
            &["update", "--resources", &path_s, &id],
            ProcIo::default(),
            false,
        );
        let _ = std::fs::remove_file(&path);
        r.map_err(unknown)?;
        Ok(api::Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TResult<api::WaitResponse> {
        let mut inner = self.lock();
        loop {
            let p = inner.proc_mut(&req.exec_id)?;
            if p.state == State::Stopped {
                return Ok(api::WaitResponse {
                    exit_status: p.exit_code,
                    exited_at: MessageField::from_option(p.exited_at.map(timestamp)),
                    ..Default::default()
                });
            }
            inner = match self.inner.1.wait(inner) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }

    fn stats(&self, _ctx: &TtrpcContext, _req: api::StatsRequest) -> TResult<api::StatsResponse> {
        // aac reads the container's cgroup itself (it chose its path).
        Err(status_err(
            ttrpc::Code::UNIMPLEMENTED,
            "the aac shim does not report metrics: read the container's cgroup",
        ))
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TResult<api::ConnectResponse> {
        let task_pid = self.lock().procs.get("").map_or(0, |p| p.pid);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TResult<api::Empty> {
        if self.lock().procs.contains_key("") {
            // The task still exists: containerd asks again after deleting it.
            return Ok(api::Empty::new());
        }
        let _ = std::fs::remove_dir_all(format!("/run/aac-shim-{}", std::process::id()));
        self.exit.signal();
        Ok(api::Empty::new())
    }
}
