//! The secrets store: one JSON file per secret under `<data>/secrets/` (0700), each file 0600,
//! written to a temporary file, fsync'd and renamed into place while the store's lock is held.
//! Root's store and each user's are separate because aac's data folder is (see
//! [`crate::state::StateDirs`]). Values never leave this module except through [`SecretValue`],
//! whose `Debug` shows `***`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::io::io_err;
use crate::state::{create_private_dir, private_options, StateDirs};

use super::SecretsError;

/// Largest secret (all its keys together), like a Kubernetes Secret.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Most keys in one secret.
pub const MAX_KEYS: usize = 256;

/// A secret value: bytes that print as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value as an environment variable's value: UTF-8 without NUL.
    pub fn as_env(&self) -> Option<&str> {
        std::str::from_utf8(&self.0)
            .ok()
            .filter(|s| !s.contains('\0'))
    }

    /// `sha256:<hex>` of the value.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.0)))
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        // Best effort: do not leave the value in freed memory.
        for b in self.0.iter_mut() {
            // SAFETY: a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// What `aac secret ls/inspect` show: never a value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    pub name: String,
    pub version: u64,
    pub created: String,
    pub updated: String,
    /// Key -> `{size, digest}`.
    pub keys: BTreeMap<String, KeyMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMeta {
    pub size: usize,
    pub digest: String,
}

/// The file of one secret.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretFile {
    name: String,
    version: u64,
    created: String,
    updated: String,
    /// Key -> base64 of the value.
    keys: BTreeMap<String, String>,
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        for v in self.keys.values_mut() {
            // SAFETY: overwriting bytes of a String with zeros keeps it valid UTF-8.
            unsafe {
                for b in v.as_bytes_mut() {
                    std::ptr::write_volatile(b, 0);
                }
            }
        }
    }
}

/// A whole secret, values included.
#[derive(Debug, Clone)]
pub struct Secret {
    pub meta: SecretMeta,
    pub values: BTreeMap<String, SecretValue>,
}

/// Check a secret name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at
/// most 253 characters (Kubernetes' names plus the upper case and `_` of variable names).
pub fn check_name(name: &str) -> Result<(), SecretsError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::Invalid(format!(
            "{name:?} is not a valid secret name: use letters, digits, '.', '_' and '-', starting \
             with a letter or digit, at most 253 characters"
        )))
    }
}

/// Check a key name: like a Kubernetes Secret key (`[-._a-zA-Z0-9]+`, not `.` or `..`).
pub fn check_key(key: &str) -> Result<(), SecretsError> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && !key.starts_with("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::Invalid(format!(
            "{key:?} is not a valid key name: use letters, digits, '.', '_' and '-' (not '.', \
             '..' or a name starting with '..')"
        )))
    }
}

fn now() -> String {
    crate::logs::format_time(std::time::SystemTime::now())
}

/// The store of one user.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Whether `new` replaces, merges into, or creates a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A new secret; an existing one is an error.
    Create,
    /// A new version of an existing secret with exactly these keys.
    Replace,
    /// A new version of an existing secret: these keys changed or added, the others kept.
    Merge,
}

impl Store {
    /// The store under aac's data folder of this user.
    pub fn new(dirs: &StateDirs) -> Store {
        Store {
            dir: dirs.data.join("secrets"),
        }
    }

    /// A store in `dir` (tests, other tools).
    pub fn at(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Hold the store's lock (exclusive for writers, shared for readers).
    fn lock(&self, exclusive: bool) -> Result<nix::fcntl::Flock<File>, SecretsError> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join(".lock");
        let f = private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        let arg = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        nix::fcntl::Flock::lock(f, arg)
            .map_err(|(_, e)| SecretsError::Io(io_err("locking", &path)(e.into())))
    }

    fn read_file(&self, name: &str) -> Result<Option<SecretFile>, SecretsError> {
        check_name(name)?;
        let path = self.path(name);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path)(e).into()),
        };
        // The error names the file, never its content.
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| SecretsError::Corrupt {
                path: path.clone(),
                reason: format!("line {} column {}", e.line(), e.column()),
            })
    }

    fn write_file(&self, file: &SecretFile) -> Result<(), SecretsError> {
        let path = self.path(&file.name);
        let tmp = self.dir.join(format!(".{}.tmp", file.name));
        let bytes = serde_json::to_vec(file).map_err(|e| SecretsError::Invalid(e.to_string()))?;
        let result = (|| {
            let mut f = private_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            f.write_all(&bytes).map_err(io_err("writing", &tmp))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &self.dir))
        })();
        zero(bytes);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Ok(result?)
    }

    fn decode(file: &SecretFile) -> Result<Secret, SecretsError> {
        let mut values = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for (k, v) in &file.keys {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| SecretsError::Corrupt {
                    path: PathBuf::from(format!("{}.json", file.name)),
                    reason: format!("key {k:?} is not base64"),
                })?;
            let v = SecretValue::new(bytes);
            keys.insert(
                k.clone(),
                KeyMeta {
                    size: v.len(),
                    digest: v.digest(),
                },
            );
            values.insert(k.clone(), v);
        }
        Ok(Secret {
            meta: SecretMeta {
                name: file.name.clone(),
                version: file.version,
                created: file.created.clone(),
                updated: file.updated.clone(),
                keys,
            },
            values,
        })
    }

    /// Write `values` as secret `name` (see [`WriteMode`]); returns the new metadata.
    pub fn write(
        &self,
        name: &str,
        values: BTreeMap<String, SecretValue>,
        mode: WriteMode,
    ) -> Result<SecretMeta, SecretsError> {
        check_name(name)?;
        for k in values.keys() {
            check_key(k)?;
        }
        let _lock = self.lock(true)?;
        let old = self.read_file(name)?;
        let mut file = match (old, mode) {
            (Some(_), WriteMode::Create) => {
                return Err(SecretsError::Exists(name.to_string()));
            }
            (None, WriteMode::Replace | WriteMode::Merge) => {
                return Err(SecretsError::NotFound(name.to_string()));
            }
            (None, WriteMode::Create) => SecretFile {
                name: name.to_string(),
                version: 0,
                created: now(),
                updated: String::new(),
                keys: BTreeMap::new(),
            },
            (Some(mut f), WriteMode::Replace) => {
                f.keys.clear();
                f
            }
            (Some(f), WriteMode::Merge) => f,
        };
        if values.is_empty() && file.keys.is_empty() {
            return Err(SecretsError::Invalid(format!(
                "secret {name:?} needs at least one key"
            )));
        }
        for (k, v) in &values {
            file.keys.insert(
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v.as_bytes()),
            );
        }
        let secret = Self::decode(&file)?;
        let total: usize = secret.values.values().map(SecretValue::len).sum();
        if total > MAX_SECRET_BYTES {
            return Err(SecretsError::TooLarge {
                name: name.to_string(),
                size: total,
            });
        }
        if file.keys.len() > MAX_KEYS {
            return Err(SecretsError::Invalid(format!(
                "secret {name:?} has {} keys; at most {MAX_KEYS} are allowed",
                file.keys.len()
            )));
        }
        file.version += 1;
        file.updated = now();
        self.write_file(&file)?;
        let mut meta = secret.meta;
        meta.version = file.version;
        meta.updated = file.updated.clone();
        Ok(meta)
    }

    /// The whole secret `name`, values included.
    pub fn secret(&self, name: &str) -> Result<Secret, SecretsError> {
        let _lock = self.lock(false)?;
        match self.read_file(name)? {
            Some(f) => Self::decode(&f),
            None => Err(SecretsError::NotFound(name.to_string())),
        }
    }

    /// One value: key `key` of secret `name`.
    pub fn get(&self, name: &str, key: &str) -> Result<SecretValue, SecretsError> {
        let mut s = self.secret(name)?;
        s.values.remove(key).ok_or_else(|| SecretsError::NoKey {
            name: name.to_string(),
            key: key.to_string(),
            keys: s.meta.keys.keys().cloned().collect(),
        })
    }

    /// Metadata of secret `name`: key names, sizes, digests.
    pub fn inspect(&self, name: &str) -> Result<SecretMeta, SecretsError> {
        self.secret(name).map(|s| s.meta.clone())
    }

    /// Whether secret `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.path(name).exists()
    }

    /// Every secret's metadata, by name.
    pub fn list(&self) -> Result<Vec<SecretMeta>, SecretsError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &self.dir)(e).into()),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.inspect(&n) {
                Ok(m) => out.push(m),
                Err(SecretsError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Remove secret `name`.
    pub fn remove(&self, name: &str) -> Result<(), SecretsError> {
        check_name(name)?;
        let _lock = self.lock(true)?;
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SecretsError::NotFound(name.to_string()))
            }
            Err(e) => Err(io_err("removing", &path)(e).into()),
        }
    }
}

fn zero(mut bytes: Vec<u8>) {
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn values(kv: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn create_update_get_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("secrets"));
        let m = store
            .write(
                "db",
                values(&[("user", "u"), ("password", "p1")]),
                WriteMode::Create,
            )
            .unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.keys.len(), 2);
        assert!(matches!(
            store.write("db", values(&[("x", "y")]), WriteMode::Create),
            Err(SecretsError::Exists(_))
        ));
        let m = store
            .write("db", values(&[("password", "p2")]), WriteMode::Merge)
            .unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(store.get("db", "password").unwrap().as_bytes(), b"p2");
        assert_eq!(store.get("db", "user").unwrap().as_bytes(), b"u");
        let err = store.get("db", "nope").unwrap_err().to_string();
        assert!(err.contains("password, user"), "{err}");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join("db.json")), 0o600);
        let text = fs::read_to_string(store.dir().join("db.json")).unwrap();
        assert!(!text.contains("p2"));
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove("db").unwrap();
        assert!(matches!(
            store.get("db", "user"),
            Err(SecretsError::NotFound(_))
        ));
    }

    #[test]
    fn limits_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path());
        let big = "x".repeat(MAX_SECRET_BYTES + 1);
        let err = store
            .write("big", values(&[("k", &big)]), WriteMode::Create)
            .unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(store
            .write("../x", values(&[("k", "v")]), WriteMode::Create)
            .is_err());
        assert!(store
            .write("ok", values(&[("..k", "v")]), WriteMode::Create)
            .is_err());
        assert!(format!("{:?}", SecretValue::new(b"canary".to_vec())) == "***");
    }
}
