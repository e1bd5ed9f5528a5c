//! Registry credentials saved by `aac login`, in docker's `config.json` format
//! (`{"auths": {"host:port": {"auth": base64("user:password")}}}`), so the file can be read
//! and written by docker's tools too.
//!
//! aac's file is `$AAC_CONFIG/config.json`, else `$XDG_CONFIG_HOME/aac/config.json`, else
//! `~/.config/aac/config.json`; it is written 0600 in a 0700 folder, atomically, keeping
//! whatever else the file holds. Looking up credentials also reads docker's own file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) when aac's has no entry;
//! only plain `auth` entries are used (credential helpers are not run).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::registry::Credentials;

/// docker's key for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a docker config.json ({reason}); fix or remove it", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{0:?} is not a registry (host[:port], e.g. 127.0.0.1:5000 or registry.example.com)")]
    BadRegistry(String),
    #[error("no home folder to keep credentials in: set AAC_CONFIG or HOME")]
    NoHome,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// aac's credentials file.
pub fn config_file() -> Result<PathBuf, AuthError> {
    if let Some(d) = std::env::var_os("AAC_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("config.json"));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("aac").join("config.json"));
    }
    home()
        .map(|h| h.join(".config").join("aac").join("config.json"))
        .ok_or(AuthError::NoHome)
}

/// docker's credentials file (read only).
fn docker_config_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker").join("config.json"))
}

/// The key `registry` is saved under: docker's for Docker Hub, `host[:port]` otherwise
/// (a scheme and path given with it are dropped, as docker does).
pub fn registry_key(registry: &str) -> Result<String, AuthError> {
    let r = registry.trim();
    let host = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && !host.starts_with(['.', '-', ':']);
    if !ok {
        return Err(AuthError::BadRegistry(registry.to_string()));
    }
    Ok(match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        _ => host,
    })
}

fn read(path: &Path) -> Result<Map<String, Value>, AuthError> {
    match fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(AuthError::Malformed {
                path: path.to_path_buf(),
                reason: "not a JSON object".into(),
            }),
            Err(e) => Err(AuthError::Malformed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(source) => Err(AuthError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write `doc` to `path`: 0600, in a 0700 folder, through a temporary file and a rename.
fn write(path: &Path, doc: &Map<String, Value>) -> Result<(), AuthError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AuthError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let body = serde_json::to_vec_pretty(&Value::Object(doc.clone())).unwrap_or_default();
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.write_all(b"\n").map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Save `creds` for `registry` (`aac login`); returns the file written.
pub fn save(registry: &str, creds: &Credentials) -> Result<PathBuf, AuthError> {
    let key = registry_key(registry)?;
    let path = config_file()?;
    let mut doc = read(&path)?;
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let raw = format!("{}:{}", creds.username, creds.password);
    let entry = serde_json::json!({
        "auth": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    if let Some(m) = auths.as_object_mut() {
        m.insert(key, entry);
    }
    write(&path, &doc)?;
    Ok(path)
}

/// Forget the credentials of `registry` (`aac logout`); false when there were none.
pub fn remove(registry: &str) -> Result<bool, AuthError> {
    let key = registry_key(registry)?;
    let path = config_file()?;
    let mut doc = read(&path)?;
    let removed = doc
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .map(|m| m.remove(&key).is_some())
        .unwrap_or(false);
    if removed {
        write(&path, &doc)?;
    }
    Ok(removed)
}

/// The entry for `key` in a config document, decoded.
fn entry_of(doc: &Map<String, Value>, key: &str) -> Option<Credentials> {
    let auths = doc.get("auths")?.as_object()?;
    let found = auths.iter().find_map(|(k, v)| {
        let k = registry_key(k).ok()?;
        (k == key).then_some(v)
    })?;
    let auth = found.get("auth")?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, pass) = raw.split_once(':')?;
    Some(Credentials::new(user, pass))
}

/// Saved credentials for `registry`: aac's file, then docker's. An unreadable file is
/// passed over (logged), as an anonymous pull may still work.
pub fn lookup(registry: &str) -> Option<Credentials> {
    let key = registry_key(registry).ok()?;
    let files = [config_file().ok(), docker_config_file()];
    for path in files.into_iter().flatten() {
        match read(&path) {
            Ok(doc) => {
                if let Some(c) = entry_of(&doc, &key) {
                    tracing::debug!(registry = %key, file = %path.display(), "using saved credentials");
                    return Some(c);
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_docker() {
        assert_eq!(registry_key("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            registry_key("https://Registry.Example.com/v2/").unwrap(),
            "registry.example.com"
        );
        assert_eq!(registry_key("docker.io").unwrap(), DOCKER_HUB_KEY);
        assert_eq!(registry_key(DOCKER_HUB_KEY).unwrap(), DOCKER_HUB_KEY);
        assert!(registry_key("").is_err());
        assert!(registry_key("a b").is_err());
    }

    #[test]
    fn entries_decode() {
        let doc: Value = serde_json::json!({"auths": {
            "http://127.0.0.1:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p:q")},
            "other:1": {"identitytoken": "x"},
        }});
        let doc = doc.as_object().unwrap();
        assert_eq!(
            entry_of(doc, "127.0.0.1:5000"),
            Some(Credentials::new("u", "p:q"))
        );
        assert_eq!(entry_of(doc, "other:1"), None);
        assert_eq!(entry_of(doc, "nowhere:1"), None);
    }
}
