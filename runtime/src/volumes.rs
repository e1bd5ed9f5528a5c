//! Named volumes: folders under aac's data (`volumes/NAME`), shared by both backends, with a
//! small record beside them (`volume-meta/NAME.json`: created, labels, anonymous). A volume
//! in use by any container (running or not) cannot be removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::io::io_err;
use crate::state::{
    create_private_dir, private_options, read_json, write_json, StateDirs, StateError,
};

/// What can go wrong with a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("{0:?} is not a volume name (letters, digits, '_', '.', '-'; starting with a letter or digit)")]
    BadName(String),
    #[error("volume {name} is in use by container {containers}")]
    InUse { name: String, containers: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
}

type Result<T> = std::result::Result<T, VolumeError>;

/// The record of a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMeta {
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container by `-v /path`: removed with it (`rm -v`, `--rm`) and by
    /// `volume prune`.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume as `volume ls`/`inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub mountpoint: PathBuf,
    pub meta: VolumeMeta,
}

/// Volume names: what docker accepts.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(VolumeError::BadName(name.to_string()))
    }
}

fn meta_dir(dirs: &StateDirs) -> PathBuf {
    dirs.data.join("volume-meta")
}

fn meta_path(dirs: &StateDirs, name: &str) -> PathBuf {
    meta_dir(dirs).join(format!("{name}.json"))
}

/// The data folder of a volume.
pub fn path(dirs: &StateDirs, name: &str) -> PathBuf {
    dirs.volumes_dir().join(name)
}

/// Volume changes are serialized by this lock: exclusive to remove, shared while a container
/// that will use volumes is being created (its record is not written yet).
pub fn lock(dirs: &StateDirs, exclusive: bool) -> Result<Flock<File>> {
    let dir = meta_dir(dirs);
    create_private_dir(&dir)?;
    let p = dir.join(".lock");
    let f = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(io_err("opening", &p))?;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    Flock::lock(f, arg)
        .map_err(|(_, e)| VolumeError::Io(io_err("locking", &p)(std::io::Error::from(e))))
}

fn now() -> String {
    crate::logs::format_time(std::time::SystemTime::now())
}

/// Create a volume (an existing one is left as it is, docker's way). Returns it.
pub fn create(
    dirs: &StateDirs,
    name: &str,
    labels: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<Volume> {
    check(name)?;
    let root = dirs.volumes_dir();
    create_private_dir(&root)?;
    let p = path(dirs, name);
    match std::fs::create_dir(&p) {
        Ok(()) => {
            // Like docker's: root's, and traversable by the container's user.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting the mode of", &p))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating", &p)(e).into()),
    }
    let mp = meta_path(dirs, name);
    let meta = match read_json::<VolumeMeta>(&mp)? {
        Some(m) => m,
        None => {
            let m = VolumeMeta {
                created: now(),
                labels,
                anonymous,
            };
            write_json(&mp, &m)?;
            m
        }
    };
    Ok(Volume {
        name: name.to_string(),
        mountpoint: p,
        meta,
    })
}

/// A new anonymous volume's name: 64 random hex digits, as docker's.
pub fn anonymous_name() -> Result<String> {
    let mut buf = [0u8; 32];
    let p = std::path::Path::new("/dev/urandom");
    std::io::Read::read_exact(&mut File::open(p).map_err(io_err("opening", p))?, &mut buf)
        .map_err(io_err("reading", p))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// One volume.
pub fn get(dirs: &StateDirs, name: &str) -> Result<Volume> {
    check(name).map_err(|_| VolumeError::NotFound(name.to_string()))?;
    let p = path(dirs, name);
    if !p.is_dir() {
        return Err(VolumeError::NotFound(name.to_string()));
    }
    Ok(Volume {
        name: name.to_string(),
        mountpoint: p,
        meta: read_json(&meta_path(dirs, name))?.unwrap_or_default(),
    })
}

/// Every volume, by name.
pub fn list(dirs: &StateDirs) -> Result<Vec<Volume>> {
    let root = dirs.volumes_dir();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &root)(e).into()),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if valid_name(&name) && e.path().is_dir() {
            out.push(get(dirs, &name)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Remove a volume's folder and record (callers check it is unused, under [`lock`]).
pub fn remove_unchecked(dirs: &StateDirs, name: &str) -> Result<()> {
    let p = path(dirs, name);
    std::fs::remove_dir_all(&p).map_err(io_err("removing", &p))?;
    let mp = meta_path(dirs, name);
    match std::fs::remove_file(&mp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", &mp)(e).into()),
    }
}

/// Containers (ID, name) whose record mounts the volume, whatever their state.
pub fn users(dirs: &StateDirs, name: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for id in dirs.container_ids()? {
        let Ok(rec) = crate::record::ContainerRecord::load(dirs, &id) else {
            continue;
        };
        if mounts(&rec, name) {
            out.push((rec.id.clone(), rec.name.clone()));
        }
    }
    Ok(out)
}

fn mounts(rec: &crate::record::ContainerRecord, name: &str) -> bool {
    rec.agent
        .spec
        .volumes
        .iter()
        .any(|v| v.kind == crate::agent::VolumeType::Volume && v.source == name)
}

/// Remove a volume unless a container uses it.
pub fn remove(dirs: &StateDirs, name: &str) -> Result<()> {
    let _lock = lock(dirs, true)?;
    get(dirs, name)?;
    let users = users(dirs, name)?;
    if !users.is_empty() {
        return Err(VolumeError::InUse {
            name: name.to_string(),
            containers: users
                .iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    remove_unchecked(dirs, name)
}

/// `volume prune`: the unused anonymous volumes (every unused one with `all`). Returns the
/// names removed and the bytes they held.
pub fn prune(dirs: &StateDirs, all: bool) -> Result<(Vec<String>, u64)> {
    let _lock = lock(dirs, true)?;
    let mut used = std::collections::BTreeSet::new();
    for id in dirs.container_ids()? {
        if let Ok(rec) = crate::record::ContainerRecord::load(dirs, &id) {
            for v in &rec.agent.spec.volumes {
                if v.kind == crate::agent::VolumeType::Volume {
                    used.insert(v.source.clone());
                }
            }
        }
    }
    let mut removed = Vec::new();
    let mut bytes = 0;
    for v in list(dirs)? {
        if used.contains(&v.name) || !(all || v.meta.anonymous) {
            continue;
        }
        bytes += usage(&v).0;
        remove_unchecked(dirs, &v.name)?;
        removed.push(v.name);
    }
    Ok((removed, bytes))
}

/// The anonymous volumes of a container being removed (`rm -v`, `--rm`), unless another
/// container uses them too. Failures are logged: the container is gone either way.
pub fn remove_anonymous_of(dirs: &StateDirs, rec: &crate::record::ContainerRecord) {
    let Ok(_lock) = lock(dirs, true) else { return };
    for v in &rec.agent.spec.volumes {
        if v.kind != crate::agent::VolumeType::Volume {
            continue;
        }
        let Ok(vol) = get(dirs, &v.source) else {
            continue;
        };
        if !vol.meta.anonymous {
            continue;
        }
        match users(dirs, &v.source) {
            Ok(u) if u.iter().all(|(id, _)| id == &rec.id) => {
                if let Err(e) = remove_unchecked(dirs, &v.source) {
                    tracing::warn!("removing volume {}: {e}", v.source);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("volume {}: {e}", v.source),
        }
    }
}

/// Bytes and files under a volume's folder (for `system df` and `volume inspect`).
pub fn usage(v: &Volume) -> (u64, u64) {
    fn walk(p: &std::path::Path, bytes: &mut u64, files: &mut u64, depth: u32) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            *files += 1;
            if md.is_dir() && depth < 64 {
                walk(&e.path(), bytes, files, depth + 1);
            } else {
                *bytes += md.len();
            }
        }
    }
    let (mut b, mut f) = (0, 0);
    walk(&v.mountpoint, &mut b, &mut f, 0);
    (b, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let t = tempfile::tempdir().unwrap();
        let dirs = StateDirs {
            run: t.path().join("run"),
            data: t.path().join("data"),
        };
        let v = create(
            &dirs,
            "cache",
            BTreeMap::from([("a".into(), "1".into())]),
            false,
        )
        .unwrap();
        assert!(v.mountpoint.is_dir());
        // again: the same volume, its labels kept
        let again = create(&dirs, "cache", BTreeMap::new(), false).unwrap();
        assert_eq!(again.meta.labels["a"], "1");
        assert_eq!(list(&dirs).unwrap().len(), 1);
        assert!(matches!(
            create(&dirs, "../x", BTreeMap::new(), false),
            Err(VolumeError::BadName(_))
        ));
        assert!(matches!(get(&dirs, "nope"), Err(VolumeError::NotFound(_))));
        remove_unchecked(&dirs, "cache").unwrap();
        assert!(list(&dirs).unwrap().is_empty());
        assert_eq!(anonymous_name().unwrap().len(), 64);
    }
}
