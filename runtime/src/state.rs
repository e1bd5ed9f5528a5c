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
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{prefix:?} matches more than one container ({ids})")]
    Ambiguous { prefix: String, ids: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
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
    /// `AAC_RUN_DIR`/`AAC_DATA_DIR` when set; else `/run/aac` + `/var/lib/aac` for root and the
    /// XDG directories for everyone else.
    pub fn from_env() -> StateDirs {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        // Root of RootlessKit's user namespace is still the user: keep the user's folders.
        let root = crate::rootlesskit::is_real_root();
        let run = env("AAC_RUN_DIR").unwrap_or_else(|| {
            if root {
                PathBuf::from("/run/aac")
            } else {
                env("XDG_RUNTIME_DIR")
                    .unwrap_or_else(|| {
                        PathBuf::from(format!("/tmp/aac-run-{}", nix::unistd::getuid()))
                    })
                    .join("aac")
            }
        });
        let data = env("AAC_DATA_DIR").unwrap_or_else(|| {
            if root {
                PathBuf::from("/var/lib/aac")
            } else {
                env("XDG_DATA_HOME")
                    .or_else(|| env("HOME").map(|h| h.join(".local/share")))
                    .unwrap_or_else(|| PathBuf::from("/tmp"))
                    .join("aac")
            }
        });
        StateDirs { run, data }
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

    /// Claim `name` for `id`. Exactly one of several concurrent claims of one name succeeds.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        let dir = self.names_dir();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => f.write_all(id.as_bytes()).map_err(io_err("writing", &path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                Err(StateError::NameInUse {
                    name: name.to_string(),
                    id: owner,
                })
            }
            Err(e) => Err(io_err("creating", &path)(e)),
        }
    }

    /// Give `name` back (only if `id` still owns it).
    pub fn release_name(&self, name: &str, id: &str) -> Result<(), StateError> {
        let path = self.names_dir().join(name);
        match fs::read_to_string(&path) {
            Ok(owner) if owner == id => fs::remove_file(&path).map_err(io_err("removing", &path)),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// IDs of every container with a record.
    pub fn container_ids(&self) -> Result<Vec<String>, StateError> {
        let dir = self.data.join("containers");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(CONTAINER_FILE).exists())
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
            if self.container_dir(&id).join(CONTAINER_FILE).exists() {
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

    /// Remove everything aac keeps for `id` (records, logs, volatile files).
    pub fn remove_container(&self, id: &str) -> Result<(), StateError> {
        for dir in [self.container_dir(id), self.container_run_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &dir)(e)),
            }
        }
        Ok(())
    }
}

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
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let body = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(&body).map_err(io_err("writing", &tmp))?;
    if durability == Durability::Synced {
        f.sync_data().map_err(io_err("syncing", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("renaming", path))
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
        Err(e) => Err(io_err("reading", path)(e)),
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
        let winners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let d = d.clone();
                    s.spawn(move || d.reserve_name("agent", &format!("id{i}")).is_ok())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(winners, 1);
        let err = d.reserve_name("agent", "other").unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn resolve_by_name_id_and_prefix() {
        let (d, base) = dirs();
        for (id, name) in [("abc123", "one"), ("abd456", "two")] {
            write_json(&d.container_dir(id).join(CONTAINER_FILE), &name).unwrap();
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
