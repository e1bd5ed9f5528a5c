//! Getting secrets to a running agent.
//!
//! Each agent using secrets gets a tmpfs of its own on the host, at
//! `<run>/containers/<id>/secrets` (mounted by aac; where aac may not mount, its run folder
//! must already be a tmpfs), holding:
//!
//! ```text
//! files/                         bound read-only at /run/secrets in the agent
//!   ..2026_12_02_06_10_00.123/   one folder per version, 0500, owned by the agent's user
//!     api-key                    0400, owned by the agent's user
//!   ..data -> ..2026_12_02_...   swapped atomically on `aac secret update` (Kubernetes' layout)
//!   api-key -> ..data/api-key
//! init/                          containerd only, bound at /run/aac-init
//!   aac-init                     the wrapper init (see the aac-init crate)
//!   main                         KEY=VALUE\0... for the next start; aac-init removes it
//! ```
//!
//! The OCI spec names only these paths; values are in the tmpfs and in memory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};

use crate::agent::Agent;
use crate::io::io_err;
use crate::record::{Backend, ContainerRecord};
use crate::state::StateDirs;

use super::refs::{self, UseKind};
use super::store::{SecretValue, Store};
use super::SecretsError;

/// Where spec.secrets files appear inside the agent.
pub const CONTAINER_SECRETS_DIR: &str = "/run/secrets";
/// Where the wrapper init and its environment files appear inside a containerd agent.
pub const CONTAINER_INIT_DIR: &str = "/run/aac-init";
/// The environment file of the main process.
pub const MAIN_ENV: &str = "main";

/// Secret environment variables: `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub Vec<(String, SecretValue)>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=***")))
            .finish()
    }
}

impl SecretEnv {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `KEY=VALUE` strings (for an execve that never leaves this process).
    pub fn to_env_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_env().unwrap_or_default()))
            .collect()
    }

    /// Add to (or replace in) `env`, a `KEY=VALUE` list.
    pub fn apply_to(&self, env: &mut Vec<String>) {
        for (k, _) in &self.0 {
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
        }
        env.extend(self.to_env_strings());
    }

    fn file_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }
}

/// The host folder of a container's secrets tmpfs.
pub fn host_dir(dirs: &StateDirs, id: &str) -> PathBuf {
    dirs.container_run_dir(id).join("secrets")
}

fn bind(dest: &str, source: &Path, opts: &[&str]) -> Result<Mount, SecretsError> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| SecretsError::Invalid(format!("building the secrets mount: {e}")))
}

/// Add the secrets mounts to a container's spec, and for a containerd agent that takes secrets
/// as environment variables make the wrapper init its first process. The spec holds paths only.
pub fn patch_spec(
    spec: &mut Spec,
    dirs: &StateDirs,
    id: &str,
    agent: &Agent,
    backend: Backend,
) -> Result<(), SecretsError> {
    let uses = refs::uses(agent);
    let files = uses.iter().any(|u| matches!(u.kind, UseKind::File { .. }));
    let env = uses.iter().any(|u| matches!(u.kind, UseKind::Env { .. }));
    let base = host_dir(dirs, id);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if files {
        let mut opts = vec!["rbind", "ro", "nosuid", "nodev", "noexec"];
        if backend == Backend::Process {
            // Its files are owned by the agent's host ids ([`owner`]), on any kernel (tmpfs
            // has idmapped mounts only from Linux 6.3 on).
            opts.push(crate::process::NO_IDMAP);
        }
        mounts.push(bind(CONTAINER_SECRETS_DIR, &base.join("files"), &opts)?);
    }
    if env && backend == Backend::Containerd {
        mounts.push(bind(
            CONTAINER_INIT_DIR,
            &base.join("init"),
            &["rbind", "rw", "nosuid", "nodev"],
        )?);
        if let Some(p) = spec.process_mut() {
            let mut args = init_args(MAIN_ENV);
            args.extend(p.args().clone().unwrap_or_default());
            p.set_args(Some(args));
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// The first arguments of a process started through the wrapper init with env file `name`.
pub fn init_args(name: &str) -> Vec<String> {
    vec![
        format!("{CONTAINER_INIT_DIR}/aac-init"),
        format!("{CONTAINER_INIT_DIR}/{name}"),
    ]
}

/// Host uid and gid of the agent's user: the spec's user, through its user namespace's
/// mappings when it has them.
pub fn host_owner(spec: &Spec) -> (u32, u32) {
    let (uid, gid) = spec
        .process()
        .as_ref()
        .map(|p| (p.user().uid(), p.user().gid()))
        .unwrap_or((0, 0));
    let linux = spec.linux().as_ref();
    let map = |id: u32, maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> u32 {
        match maps {
            Some(m) if !m.is_empty() => m
                .iter()
                .find(|m| id >= m.container_id() && id - m.container_id() < m.size())
                .map(|m| m.host_id() + (id - m.container_id()))
                .unwrap_or(id),
            _ => id,
        }
    };
    (
        map(uid, linux.and_then(|l| l.uid_mappings().as_ref())),
        map(gid, linux.and_then(|l| l.gid_mappings().as_ref())),
    )
}

/// Host uid and gid the agent's secret files belong to: [`host_owner`], and for an agent of
/// the process backend run by root its user through the range of host ids it runs in.
pub fn owner(rec: &ContainerRecord) -> Result<(u32, u32), SecretsError> {
    let (uid, gid) = host_owner(&rec.spec);
    if rec.backend != Backend::Process || !crate::rootlesskit::is_real_root() {
        return Ok((uid, gid));
    }
    let r =
        crate::process::userns::host_range().map_err(|e| SecretsError::Invalid(e.to_string()))?;
    r.to_host(uid, gid).ok_or_else(|| {
        SecretsError::Invalid(format!(
            "user {uid}:{gid} is outside the agent's user namespace ({})",
            r.describe()
        ))
    })
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(p), p.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        _ => false,
    }
}

fn on_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

/// Make `base` a tmpfs private to this container: mount one, or (where aac may not mount)
/// use a folder on the run folder's tmpfs. Never a folder on a disk.
fn ensure_tmpfs(base: &Path, size: usize) -> Result<(), SecretsError> {
    crate::state::create_private_dir(base)?;
    if is_mountpoint(base) {
        return Ok(());
    }
    let opts = format!("mode=0700,size={size}");
    match nix::mount::mount(
        Some("aac-secrets"),
        base,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    ) {
        Ok(()) => Ok(()),
        Err(e) => {
            if base.parent().is_some_and(on_tmpfs) {
                tracing::debug!(
                    "mounting a tmpfs at {}: {e}; its folder is a tmpfs",
                    base.display()
                );
                Ok(())
            } else {
                Err(SecretsError::Invalid(format!(
                    "secrets need a tmpfs: mounting one at {} failed ({e}) and that folder is not \
                     on a tmpfs; set AAC_RUN_DIR to a folder on a tmpfs",
                    base.display()
                )))
            }
        }
    }
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), SecretsError> {
    match nix::unistd::chown(p, Some(uid.into()), Some(gid.into())) {
        Ok(()) => Ok(()),
        // A user's own agents without a user namespace mapping: the files stay the user's.
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EINVAL)
            if !crate::rootlesskit::is_real_root() =>
        {
            Ok(())
        }
        Err(e) => Err(io_err("changing the owner of", p)(e.into()).into()),
    }
}

fn mkdir(p: &Path, mode: u32) -> Result<(), SecretsError> {
    match fs::DirBuilder::new().mode(mode).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("creating", p)(e).into()),
    }
}

fn write_new(p: &Path, bytes: &[u8], mode: u32) -> Result<(), SecretsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(p)
        .map_err(io_err("creating", p))?;
    f.write_all(bytes).map_err(io_err("writing", p))?;
    Ok(())
}

/// Values of `agent`'s secrets: files (`/run/secrets` name -> value) and environment.
pub fn resolve(
    store: &Store,
    agent: &Agent,
) -> Result<(BTreeMap<String, SecretValue>, SecretEnv), SecretsError> {
    let mut files = BTreeMap::new();
    let mut env = SecretEnv::default();
    for u in refs::uses(agent) {
        let v = refs::value(store, &u)?;
        match u.kind {
            UseKind::File { file } => {
                files.insert(file, v);
            }
            UseKind::Env { var } => env.0.push((var, v)),
        }
    }
    Ok((files, env))
}

/// The secret environment variables of `agent`, from the store as it is now.
pub fn env_values(store: &Store, agent: &Agent) -> Result<SecretEnv, SecretsError> {
    if !refs::has_env(agent) {
        return Ok(SecretEnv::default());
    }
    resolve(store, agent).map(|(_, env)| env)
}

/// Write `files` as a new version under `dir` (Kubernetes' atomic writer): a fresh timestamped
/// folder, `..data` swapped onto it by a rename, one symlink per name, the old version removed.
fn write_version(
    dir: &Path,
    files: &BTreeMap<String, SecretValue>,
    uid: u32,
    gid: u32,
) -> Result<(), SecretsError> {
    // Writable by its owner, who may be aac's own user (rootless): the agent sees it read-only.
    mkdir(dir, 0o700)?;
    chown(dir, uid, gid)?;
    let stamp = crate::logs::format_time(std::time::SystemTime::now())
        .replace([':', '-', 'T'], "_")
        .trim_end_matches('Z')
        .to_string();
    let version = dir.join(format!("..{stamp}.{}", &crate::state::new_id()[..6]));
    mkdir(&version, 0o700)?;
    for (name, value) in files {
        let p = version.join(name);
        write_new(&p, value.as_bytes(), 0o400)?;
        chown(&p, uid, gid)?;
    }
    fs::set_permissions(
        &version,
        std::os::unix::fs::PermissionsExt::from_mode(0o500),
    )
    .map_err(io_err("setting the mode of", &version))?;
    chown(&version, uid, gid)?;
    let old = fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    let target = version.file_name().map(PathBuf::from).unwrap_or_default();
    symlink(&target, &tmp).map_err(io_err("linking", &tmp))?;
    fs::rename(&tmp, dir.join("..data")).map_err(io_err("swapping", &dir.join("..data")))?;
    for name in files.keys() {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), &link).map_err(io_err("linking", &link))?;
        }
    }
    // Names no longer delivered, and the previous version.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("..") && !files.contains_key(&n) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    if let Some(old) = old {
        if old != target {
            // A version folder is 0500: its files can be removed once it is writable again.
            let old = dir.join(old);
            let _ = fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o700));
            if let Err(e) = fs::remove_dir_all(&old) {
                tracing::warn!(
                    "removing the previous secrets version {}: {e}",
                    old.display()
                );
            }
        }
    }
    Ok(())
}

fn tmpfs_size(files: &BTreeMap<String, SecretValue>, env: &SecretEnv) -> usize {
    let data: usize = files.values().map(SecretValue::len).sum::<usize>()
        + env
            .0
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    // Two versions during an update, the init, exec environment files.
    (data * 2 + super::store::MAX_SECRET_BYTES * 2 + aac_init::AAC_INIT.len()).max(4 << 20)
}

/// Before each start of the container's main process: the tmpfs, its files (as the store has
/// them now) and, for containerd, the wrapper init and the main process's environment file.
/// Returns the secret environment variables (the process backend passes them to execve).
pub fn prepare(dirs: &StateDirs, rec: &ContainerRecord) -> Result<SecretEnv, SecretsError> {
    let uses = refs::uses(&rec.agent);
    if uses.is_empty() {
        return Ok(SecretEnv::default());
    }
    let store = Store::new(dirs);
    let (files, env) = resolve(&store, &rec.agent)?;
    let base = host_dir(dirs, &rec.id);
    ensure_tmpfs(&base, tmpfs_size(&files, &env))?;
    let (uid, gid) = owner(rec)?;
    if uses.iter().any(|u| matches!(u.kind, UseKind::File { .. })) {
        write_version(&base.join("files"), &files, uid, gid)?;
    }
    if !env.is_empty() && rec.backend == Backend::Containerd {
        write_env_file(dirs, &rec.id, MAIN_ENV, &env, uid, gid)?;
    }
    Ok(env)
}

/// Write environment file `name` for the wrapper init (and the init itself when missing),
/// owned by `uid:gid`, the user the process runs as.
pub fn write_env_file(
    dirs: &StateDirs,
    id: &str,
    name: &str,
    env: &SecretEnv,
    uid: u32,
    gid: u32,
) -> Result<(), SecretsError> {
    let base = host_dir(dirs, id);
    if !is_mountpoint(&base) && !base.parent().is_some_and(on_tmpfs) {
        ensure_tmpfs(&base, 4 << 20)?;
    }
    let init = base.join("init");
    mkdir(&init, 0o700)?;
    chown(&init, uid, gid)?;
    let bin = init.join("aac-init");
    if fs::metadata(&bin).map(|m| m.len()).ok() != Some(aac_init::AAC_INIT.len() as u64) {
        let tmp = init.join(".aac-init.tmp");
        write_new(&tmp, aac_init::AAC_INIT, 0o555)?;
        fs::rename(&tmp, &bin).map_err(io_err("renaming into place", &bin))?;
    }
    let p = init.join(name);
    let tmp = init.join(format!(".{name}.tmp"));
    let mut bytes = env.file_bytes();
    let r = write_new(&tmp, &bytes, 0o400)
        .and_then(|()| chown(&tmp, uid, gid))
        .and_then(|()| {
            fs::rename(&tmp, &p).map_err(|e| io_err("renaming into place", &p)(e).into())
        });
    bytes.iter_mut().for_each(|b| *b = 0);
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Remove an environment file the wrapper init did not (the command never started).
pub fn remove_env_file(dirs: &StateDirs, id: &str, name: &str) {
    let _ = fs::remove_file(host_dir(dirs, id).join("init").join(name));
}

/// After `aac secret update`: write the files of a running container anew from the store.
/// Returns whether it has files to refresh.
pub fn refresh(dirs: &StateDirs, rec: &ContainerRecord) -> Result<bool, SecretsError> {
    if !refs::uses(&rec.agent)
        .iter()
        .any(|u| matches!(u.kind, UseKind::File { .. }))
    {
        return Ok(false);
    }
    let files_dir = host_dir(dirs, &rec.id).join("files");
    if !files_dir.join("..data").exists() {
        return Ok(false);
    }
    let (files, _) = resolve(&Store::new(dirs), &rec.agent)?;
    let (uid, gid) = owner(rec)?;
    write_version(&files_dir, &files, uid, gid)?;
    Ok(true)
}

/// Unmount and remove a container's secrets tmpfs (on remove, on a failed create, by prune).
pub fn release(dirs: &StateDirs, id: &str) {
    let base = host_dir(dirs, id);
    if !base.exists() {
        return;
    }
    if is_mountpoint(&base) {
        if let Err(e) = nix::mount::umount2(&base, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmounting {}: {e}", base.display());
        }
    }
    // Where no tmpfs was mounted (rootless) the version folders (0500) are on the run folder.
    writable_dirs(&base);
    if let Err(e) = fs::remove_dir_all(&base) {
        tracing::warn!("removing {}: {e}", base.display());
    }
}

/// Make `dir` and the folders under it (symlinks not followed) writable by their owner, so
/// that a user who is not root can remove them.
fn writable_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                writable_dirs(&e.path());
            }
        }
    }
}

/// Whether `p` is a mounted secrets tmpfs (for leak checks).
pub fn is_mounted(dirs: &StateDirs, id: &str) -> bool {
    is_mountpoint(&host_dir(dirs, id))
}
