//! aac's on-disk state, shared by the CLI and the per-container monitor (aac-shim).
//!
//! Layout (root: `/run/aac` and `/var/lib/aac`; rootless: `$XDG_RUNTIME_DIR/aac` and
//! `$XDG_DATA_HOME/aac`):
//!
//! ```text
//! <data>/containers/<id>/container.json   what was asked: name, backend, agent, spec, ports
//! <data>/containers/<id>/status.json      what happened: pid, times, exit code, health, restarts
//! <data>/containers/<id>/json.log[.N]     the container's output, docker json-file format
//! <data>/names/<name>                     name -> id; created with O_EXCL so one name has one owner
//! <data>/volumes/<name>/                  named volumes
//! <run>/containers/<id>/                  volatile: monitor pid and socket, stdio FIFOs
//! ```
//!
//! Records are written to a temporary file and renamed into place, so a reader never sees a
//! half-written record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use crate::io::io_err;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{prefix:?} matches more than one container ({ids})")]
    Ambiguous { prefix: String, ids: String },
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error("reading {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// No folder for aac's state could be chosen for this user.
    #[error("{0}")]
    NoStateDir(String),
    /// A state folder others could change or read.
    #[error("refusing to use {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
}

/// Mode of every folder aac creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file aac creates.
pub const FILE_MODE: u32 = 0o600;

/// Create `path` and its missing parents as private folders (0700).
pub fn create_private_dir(path: &Path) -> Result<(), crate::io::IoError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_err("creating", path))
}

/// Open options for a private file (0600 from the start, never chmod after).
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Write `bytes` to a new or truncated private file.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), crate::io::IoError> {
    let mut f = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("creating", path))?;
    f.write_all(bytes).map_err(io_err("writing", path))
}

/// The two state roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDirs {
    /// Volatile state (tmpfs): monitor sockets, FIFOs.
    pub run: PathBuf,
    /// Persistent state: records, logs, volumes.
    pub data: PathBuf,
}

impl StateDirs {
    /// `AAC_RUN_DIR`/`AAC_DATA_DIR` when set; else `/run/aac` + `/var/lib/aac` for root and
    /// `$XDG_RUNTIME_DIR/aac` + `$XDG_DATA_HOME/aac` (`~/.local/share/aac`) for everyone else.
    /// There is no fallback under /tmp: without those variables it fails and says what to set.
    /// Both folders are made 0700 and must belong to the caller ([`StateDirs::check`]).
    pub fn from_env() -> Result<StateDirs, StateError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        // Root of RootlessKit's user namespace is still the user: keep the user's folders.
        let root = crate::rootlesskit::is_real_root();
        let run = match env("AAC_RUN_DIR") {
            Some(d) => d,
            None if root => PathBuf::from("/run/aac"),
            None => env("XDG_RUNTIME_DIR")
                .map(|d| d.join("aac"))
                .ok_or_else(|| {
                    StateError::NoStateDir(
                        "no folder for aac's runtime state: XDG_RUNTIME_DIR is not set (log in \
                         through systemd-logind, or set XDG_RUNTIME_DIR or AAC_RUN_DIR to a \
                         folder only you can write)"
                            .into(),
                    )
                })?,
        };
        let data = match env("AAC_DATA_DIR") {
            Some(d) => d,
            None if root => PathBuf::from("/var/lib/aac"),
            None => env("XDG_DATA_HOME")
                .or_else(|| env("HOME").map(|h| h.join(".local/share")))
                .map(|d| d.join("aac"))
                .ok_or_else(|| {
                    StateError::NoStateDir(
                        "no folder for aac's data: neither XDG_DATA_HOME nor HOME is set (set \
                         one, or AAC_DATA_DIR)"
                            .into(),
                    )
                })?,
        };
        let dirs = StateDirs { run, data };
        dirs.check()?;
        Ok(dirs)
    }

    /// Make both roots exist as private folders of the caller: created 0700; an existing one
    /// must belong to the caller and not be writable by group or others (else it is
    /// refused, naming it), and is made 0700 when others could read it.
    pub fn check(&self) -> Result<(), StateError> {
        let uid = nix::unistd::geteuid().as_raw();
        for dir in [&self.run, &self.data] {
            create_private_dir(dir)?;
            let meta = fs::metadata(dir).map_err(io_err("reading", dir))?;
            if !meta.is_dir() {
                return Err(StateError::Unsafe {
                    path: dir.clone(),
                    reason: "it is not a folder".into(),
                });
            }
            if meta.uid() != uid {
                return Err(StateError::Unsafe {
                    path: dir.clone(),
                    reason: format!(
                        "it belongs to uid {}, not to this user (uid {uid})",
                        meta.uid()
                    ),
                });
            }
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(StateError::Unsafe {
                    path: dir.clone(),
                    reason: format!(
                        "it is writable by group or others (mode {mode:04o}); make it 0700"
                    ),
                });
            }
            if mode & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                    .map_err(io_err("restricting", dir))?;
            }
        }
        Ok(())
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.data.join("containers").join(id)
    }

    pub fn container_run_dir(&self, id: &str) -> PathBuf {
        self.run.join("containers").join(id)
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.data.join("volumes")
    }

    fn names_dir(&self) -> PathBuf {
        self.data.join("names")
    }

    /// The folders aac writes records into with [`write_json`] or name links: where a killed
    /// writer can leave a temporary file (see [`sweep_stale_temps`]).
    pub fn record_dirs(&self) -> Vec<PathBuf> {
        let mut out = vec![self.names_dir(), self.data.join("containers")];
        if let Ok(ids) = self.container_ids() {
            out.extend(ids.iter().map(|id| self.container_dir(id)));
        }
        out
    }

    /// Hold the creation lock of container `id` (an exclusive `flock` in its volatile folder)
    /// for as long as the returned guard lives: while it is held, a name or leftover of `id`
    /// without a record is a creation under way, not garbage ([`StateDirs::creating`]). The
    /// kernel drops it however the creator dies.
    pub fn lock_create(&self, id: &str) -> Result<nix::fcntl::Flock<File>, StateError> {
        let dir = self.container_run_dir(id);
        create_private_dir(&dir)?;
        let path = dir.join(CREATE_LOCK);
        let f = private_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io_err("locking", &path)(e.into()).into())
    }

    /// Whether a live process holds the creation lock of `id`.
    pub fn creating(&self, id: &str) -> bool {
        let path = self.container_run_dir(id).join(CREATE_LOCK);
        let Ok(f) = OpenOptions::new().write(true).open(&path) else {
            return false;
        };
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
            Ok(_free) => false,
            Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
        }
    }

    /// Whether container `id` has a record.
    pub fn has_record(&self, id: &str) -> bool {
        self.container_dir(id).join(CONTAINER_FILE).exists()
    }

    /// The container a name belongs to, when the name file is valid (an ID) and its owner is
    /// alive: it has a record, or its creation is under way.
    fn name_owner(&self, path: &Path) -> Option<String> {
        let id = fs::read_to_string(path).ok()?;
        let valid = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && (self.has_record(&id) || self.creating(&id))).then_some(id)
    }

    /// Claim `name` for `id`. Exactly one of several concurrent claims of one name succeeds.
    /// The ID is written to a private temporary file first and linked into place, so the
    /// name file is never empty or partly written (a full disk fails the claim instead); a
    /// name whose owner has neither a record nor a creation under way is taken over.
    /// Call with `id`'s creation lock held ([`StateDirs::lock_create`]).
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        let dir = self.names_dir();
        create_private_dir(&dir)?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{id}.{}.tmp", std::process::id()));
        let claim = || -> Result<bool, StateError> {
            write_private(&tmp, id.as_bytes())?;
            match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io_err("creating", &path)(e).into()),
            }
        };
        let result = (|| {
            for _ in 0..3 {
                if claim()? {
                    return Ok(());
                }
                match self.name_owner(&path) {
                    Some(owner) => {
                        return Err(StateError::NameInUse {
                            name: name.to_string(),
                            id: owner,
                        })
                    }
                    None => {
                        // Left by a run that died before its record existed, or garbage.
                        tracing::info!(name, "taking over a stale name");
                        match fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io_err("removing", &path)(e).into()),
                        }
                    }
                }
            }
            Err(StateError::NameInUse {
                name: name.to_string(),
                id: fs::read_to_string(&path).unwrap_or_default(),
            })
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Move container `id` from name `old` to `new`: `new` is claimed first (exactly one of
    /// concurrent claims wins, as for [`StateDirs::reserve_name`]), then `save` records it,
    /// then `old` is given back; a failing `save` gives `new` back instead.
    pub fn rename<E: From<StateError>>(
        &self,
        old: &str,
        new: &str,
        id: &str,
        save: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        self.reserve_name(new, id)?;
        if let Err(e) = save() {
            let _ = self.release_name(new, id);
            return Err(e);
        }
        self.release_name(old, id)?;
        Ok(())
    }

    /// Give `name` back (only if `id` still owns it).
    pub fn release_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        let path = self.names_dir().join(name);
        match fs::read_to_string(&path) {
            Ok(owner) if owner == id => {
                Ok(fs::remove_file(&path).map_err(io_err("removing", &path))?)
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("reading", &path)(e).into()),
        }
    }

    /// Names whose owner has neither a record nor a creation under way, with their files.
    pub fn stale_names(&self) -> Result<Vec<String>, StateError> {
        let dir = self.names_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e).into()),
        };
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter(|n| self.name_owner(&dir.join(n)).is_none())
            .collect())
    }

    /// Remove a name file whose owner is gone (see [`StateDirs::stale_names`]); a name
    /// claimed again meanwhile is left alone.
    pub fn remove_stale_name(&self, name: &str) -> Result<bool, StateError> {
        let path = self.names_dir().join(name);
        if self.name_owner(&path).is_some() {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &path)(e).into()),
        }
    }

    /// IDs of every container with a record.
    pub fn container_ids(&self) -> Result<Vec<String>, StateError> {
        self.list_ids(&self.data.join("containers"), true)
    }

    /// IDs with a folder in the data or run tree but no record (a creation under way, or left
    /// by one that died).
    pub fn orphan_ids(&self) -> Result<Vec<String>, StateError> {
        let mut ids = self.list_ids(&self.data.join("containers"), false)?;
        ids.extend(self.list_ids(&self.run.join("containers"), false)?);
        ids.sort();
        ids.dedup();
        ids.retain(|id| !self.has_record(id));
        Ok(ids)
    }

    fn list_ids(&self, dir: &Path, with_record: bool) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", dir)(e).into()),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !with_record || e.path().join(CONTAINER_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Resolve a name, a full ID or a unique ID prefix (docker's rules) to an ID.
    pub fn resolve(&self, name_or_id: &str) -> Result<String, StateError> {
        if name_or_id.is_empty() || name_or_id.contains('/') {
            return Err(StateError::NotFound(name_or_id.to_string()));
        }
        let by_name = self.names_dir().join(name_or_id);
        if let Ok(id) = fs::read_to_string(&by_name) {
            if self.has_record(&id) {
                return Ok(id);
            }
        }
        let ids = self.container_ids()?;
        let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(name_or_id)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StateError::NotFound(name_or_id.to_string())),
            many => Err(StateError::Ambiguous {
                prefix: name_or_id.to_string(),
                ids: many
                    .iter()
                    .map(|s| s.chars().take(12).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Remove everything aac keeps for `id` (records, logs, volatile files, its secrets
    /// tmpfs).
    pub fn remove_container(&self, id: &str) -> Result<(), StateError> {
        crate::secrets::delivery::release(self, id);
        for dir in [self.container_dir(id), self.container_run_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &dir)(e).into()),
            }
        }
        Ok(())
    }
}

/// Lock file in a container's volatile folder held while it is being created.
pub const CREATE_LOCK: &str = "create.lock";

/// File name of the record of what a container was asked to be.
pub const CONTAINER_FILE: &str = "container.json";
/// File name of the record of what happened to it.
pub const STATUS_FILE: &str = "status.json";

/// How a record reaches the disk. Either way it replaces the old one atomically (temporary
/// file + rename), so readers never see half of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed to the disk before it replaces the old one: survives a host crash.
    Synced,
    /// Left to the page cache: for records that never outlive the run that wrote them (an
    /// `--rm` container's), where a flush per write would only add latency.
    Transient,
}

/// Write `value` as JSON to `path` atomically (temporary file + rename), flushed to the disk.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_json_with(path, value, Durability::Synced)
}

/// [`write_json`] with the given [`Durability`].
pub fn write_json_with<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let body = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let written = (|| -> Result<(), StateError> {
        let mut f = private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        f.write_all(&body).map_err(io_err("writing", &tmp))?;
        if durability == Durability::Synced {
            f.sync_data().map_err(io_err("syncing", &tmp))?;
        }
        Ok(fs::rename(&tmp, path).map_err(io_err("renaming", path))?)
    })();
    if written.is_err() {
        // A full disk: leave no half-written temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The process that wrote a temporary file of [`write_json`] (`NAME.tmpPID`) or of a name link
/// (`.ID.PID.tmp`), from its file name.
fn temp_writer(file: &str) -> Option<i32> {
    let digits = match file.rsplit_once(".tmp") {
        Some((_, pid)) if !pid.is_empty() => pid,
        Some((head, "")) if file.starts_with('.') => head.rsplit_once('.')?.1,
        _ => return None,
    };
    digits.parse().ok().filter(|p: &i32| *p > 0)
}

/// Remove the temporary files in `dir` whose writer is gone (an aac killed between writing and
/// renaming one); returns what was removed. Files of live writers are left alone.
pub fn sweep_stale_temps(dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e).into()),
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(temp_writer) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = e.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &path)(e).into()),
        }
    }
    Ok(removed)
}

/// Read a JSON record; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path)(e).into()),
    }
}

/// A new random 64-hex-digit container ID.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    let from_kernel = File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !from_kernel {
        // No /dev/urandom (unusual chroots): std's randomly keyed hasher still gives
        // unpredictable, distinct values.
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_dead_writers_are_swept_and_live_ones_kept() {
        assert_eq!(temp_writer("abc.tmp1234"), Some(1234));
        assert_eq!(temp_writer(".abc.77.tmp"), Some(77));
        assert_eq!(temp_writer("abc.json"), None);
        assert_eq!(temp_writer("abc.tmp"), None);
        let dir = std::env::temp_dir().join(format!("aac-sweep-test-{}", new_id()));
        create_private_dir(&dir).unwrap();
        // pid_max is at most 2^22: this writer cannot be alive.
        let dead = dir.join("x.tmp4999999");
        let live = dir.join(format!("y.tmp{}", std::process::id()));
        let record = dir.join("z.json");
        for f in [&dead, &live, &record] {
            write_private(f, b"{}").unwrap();
        }
        assert_eq!(sweep_stale_temps(&dir).unwrap(), vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && record.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn dirs() -> (StateDirs, PathBuf) {
        let base = std::env::temp_dir().join(format!("aac-state-test-{}", new_id()));
        (
            StateDirs {
                run: base.join("run"),
                data: base.join("data"),
            },
            base,
        )
    }

    #[test]
    fn one_name_one_owner_even_when_racing() {
        let (d, base) = dirs();
        d.check().unwrap();
        let winners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let d = d.clone();
                    s.spawn(move || {
                        let id = format!("{i:064x}");
                        let lock = d.lock_create(&id).unwrap();
                        let won = d.reserve_name("agent", &id).is_ok();
                        // The winner keeps its claim alive (as a creation under way).
                        if won {
                            std::mem::forget(lock);
                        }
                        won
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(winners, 1);
        let other = format!("{:064x}", 99);
        let _lock = d.lock_create(&other).unwrap();
        let err = d.reserve_name("agent", &other).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_name_whose_owner_died_before_its_record_is_taken_over() {
        let (d, base) = dirs();
        d.check().unwrap();
        let dead = format!("{:064x}", 1);
        {
            let _lock = d.lock_create(&dead).unwrap();
            d.reserve_name("agent", &dead).unwrap();
            // Its creator dies here: the lock goes, no record was written.
        }
        assert_eq!(d.stale_names().unwrap(), ["agent"]);
        // An empty name file (a full disk, an older aac) is stale too.
        fs::write(d.data.join("names/empty"), b"").unwrap();
        let live = format!("{:064x}", 2);
        let _lock = d.lock_create(&live).unwrap();
        d.reserve_name("agent", &live).unwrap();
        d.reserve_name("empty", &live).unwrap();
        assert_eq!(
            fs::read_to_string(d.data.join("names/agent")).unwrap(),
            live
        );
        assert!(d.stale_names().unwrap().is_empty());
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn state_folders_are_private_and_checked() {
        let (d, base) = dirs();
        d.check().unwrap();
        for dir in [&d.run, &d.data] {
            let mode = fs::metadata(dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        write_json(&d.container_dir("x").join(STATUS_FILE), &1).unwrap();
        let f = fs::metadata(d.container_dir("x").join(STATUS_FILE)).unwrap();
        assert_eq!(f.permissions().mode() & 0o777, 0o600);
        let cd = fs::metadata(d.container_dir("x")).unwrap();
        assert_eq!(cd.permissions().mode() & 0o777, 0o700);
        // A folder others may write is refused, naming it.
        fs::set_permissions(&d.data, fs::Permissions::from_mode(0o777)).unwrap();
        let err = d.check().unwrap_err().to_string();
        assert!(
            err.contains(&d.data.display().to_string()) && err.contains("writable"),
            "{err}"
        );
        // One others may read is made private.
        fs::set_permissions(&d.data, fs::Permissions::from_mode(0o755)).unwrap();
        d.check().unwrap();
        let mode = fs::metadata(&d.data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn resolve_by_name_id_and_prefix() {
        let (d, base) = dirs();
        for (id, name) in [("abc123", "one"), ("abd456", "two")] {
            write_json(&d.container_dir(id).join(CONTAINER_FILE), &name).unwrap();
            let _lock = d.lock_create(id).unwrap();
            d.reserve_name(name, id).unwrap();
        }
        assert_eq!(d.resolve("one").unwrap(), "abc123");
        assert_eq!(d.resolve("abd").unwrap(), "abd456");
        assert_eq!(d.resolve("abc123").unwrap(), "abc123");
        assert!(matches!(d.resolve("ab"), Err(StateError::Ambiguous { .. })));
        assert!(matches!(d.resolve("zzz"), Err(StateError::NotFound(_))));
        assert!(matches!(d.resolve("../x"), Err(StateError::NotFound(_))));
        d.release_name("one", "abc123").unwrap();
        d.remove_container("abc123").unwrap();
        assert_eq!(d.container_ids().unwrap(), ["abd456"]);
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn ids_are_random_hex() {
        let a = new_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }
}
