//! Kubernetes YAML run on this host: `aac kube play FILE` and `aac kube down FILE`, through
//! the library engine (the same create/start/remove `aac up` and `aac rm` use).
//!
//! A played file has a folder of its own, `<data>/kube/<file id>/` (0700), where the file id is
//! derived from the file's absolute path:
//!
//! - `played.json` (0600): the file, the containers made from it, the ephemeral volumes
//!   (emptyDir) they use; written before each container is made, so that `down` finds
//!   whatever a failed or interrupted `play` left;
//! - `configmaps/<name>/<key>`: the ConfigMaps' data, mounted where the pods ask.
//!
//! The file's Secrets go into aac's secrets store as `kube.<file id>.<name>` (so that they
//! clash neither with the user's secrets nor with another file's), and the agents reference
//! them there: the engine delivers them as it does any agent's secrets (files on a private
//! tmpfs at `/run/secrets`, environment variables handed to the process), so their values are
//! in no agent, spec or record. `down` removes the secrets `play` created, not those that were
//! in the store before. Secrets the file references but does not hold are the store's own.
//!
//! A Deployment with more than one replica, or one an HPA governs, comes up through
//! [`Engine::up`]: its replicas behind one published port, with a supervisor; `down` takes the
//! group down. Every container carries the label [`PLAY_LABEL`] with the file id, so `down`
//! also finds containers whose `played.json` was lost.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::time::Duration;

use aac_agent::{Agent, Diagnostics, EnvSource};
use aac_runtime::engine::{
    is_scaled, Container, CreateOptions, Engine, EngineError, RuntimeChoice, UpOptions,
};
use aac_runtime::io::io_err;
use aac_runtime::scale::group;
use aac_runtime::secrets::{SecretValue, SecretsError, Store, WriteMode};
use aac_runtime::state::{create_private_dir, read_json, write_json, StateError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::generate::SecretSource;
use crate::play::{play, Play, PlayOptions};

/// The label every played container carries: the id of the file it came from.
pub const PLAY_LABEL: &str = "agent.dev/kube-play";
/// The label naming the object a played container came from (`Deployment.web`).
pub const SOURCE_LABEL: &str = "agent.dev/kube-source";

const PLAYED_FILE: &str = "played.json";

/// Why a file could not be played or taken down.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid Kubernetes YAML:\n{0}")]
    Invalid(Diagnostics),
    /// The file asks for something aac cannot do here (yet).
    #[error("{0}")]
    Refused(String),
    #[error("{object}: {source}")]
    Object {
        object: String,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Io(#[from] aac_runtime::io::IoError),
}

impl LocalError {
    /// docker's exit codes: 126/127 when a command could not run, 125 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Object { source, .. } | LocalError::Engine(source) => source.exit_code(),
            _ => 125,
        }
    }
}

/// How to play.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOptions {
    pub runtime: RuntimeChoice,
    /// Wait until every container's health check passes.
    pub wait_healthy: bool,
}

/// One container made by `play`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayedContainer {
    pub name: String,
    pub id: String,
    /// `Deployment/web`.
    pub source: String,
}

/// What `play` did.
#[derive(Debug, Clone, Default)]
pub struct PlayReport {
    /// The containers made, replicas of scaled agents included.
    pub containers: Vec<PlayedContainer>,
    /// The scaled agents brought up (replicas behind one port, with a supervisor).
    pub groups: Vec<String>,
    /// The secrets put into the store, by the file's Secret name.
    pub secrets: BTreeMap<String, String>,
    /// Fields not carried out (with file:line), and what `play` decided on the user's behalf.
    pub warnings: Vec<String>,
}

/// What `down` removed.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    pub removed: Vec<String>,
    pub volumes: Vec<String>,
}

/// The record of a played file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Played {
    file: PathBuf,
    #[serde(default)]
    containers: Vec<PlayedContainer>,
    /// Names of the ephemeral (emptyDir) volumes: removed by `down`.
    #[serde(default)]
    volumes: Vec<String>,
    /// The scaled agents brought up through `Engine::up`: `down` takes them down.
    #[serde(default)]
    groups: Vec<String>,
    /// Store name -> the file's Secret name, for every Secret of the file.
    #[serde(default)]
    secret_names: BTreeMap<String, String>,
    /// The store secrets `play` created (not there before): `down` removes them.
    #[serde(default)]
    created_secrets: Vec<String>,
}

/// The name in aac's secrets store of Secret `name` of the file with id `file_id`.
pub fn store_secret_name(file_id: &str, name: &str) -> String {
    format!("kube.{file_id}.{name}")
}

/// Turn an agent's references to secrets named in `names` into the names they map to.
fn with_store_names(agent: &mut Agent, names: &BTreeMap<String, String>) {
    for e in &mut agent.spec.environment {
        if let EnvSource::Secret { secret_name, .. } = &mut e.source {
            if let Some(n) = names.get(secret_name.as_str()) {
                *secret_name = n.clone();
            }
        }
    }
    for s in &mut agent.spec.secrets {
        if let Some(n) = names.get(s.secret_name.as_str()) {
            s.secret_name = n.clone();
        }
    }
}

/// aac's secrets store as the source of the keys and values `kube generate` writes out.
#[derive(Debug, Clone)]
pub struct StoreSecrets(pub Store);

impl SecretSource for StoreSecrets {
    fn keys(&self, name: &str) -> Result<Vec<String>, String> {
        self.0
            .inspect(name)
            .map(|m| m.keys.into_keys().collect())
            .map_err(|e| e.to_string())
    }

    fn value(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        self.0
            .get(name, key)
            .map(|v| v.as_bytes().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// The absolute path `file` is known by (it need not exist any more for `down`).
fn absolute(file: &Path) -> PathBuf {
    match std::fs::canonicalize(file) {
        Ok(p) => p,
        Err(_) if file.is_absolute() => file.to_path_buf(),
        Err(_) => std::env::current_dir()
            .map(|d| d.join(file))
            .unwrap_or_else(|_| file.to_path_buf()),
    }
}

/// The id of a played file: the first 16 hex digits of the SHA-256 of its absolute path.
pub fn file_id(file: &Path) -> String {
    let abs = absolute(file);
    let digest = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..8])
}

fn play_dir(engine: &Engine, id: &str) -> PathBuf {
    engine.dirs().data.join("kube").join(id)
}

/// A key or name used as one path component: no separators, not `.`/`..`.
fn component(what: &str, s: &str) -> Result<(), LocalError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(LocalError::Refused(format!(
            "{what} {s:?} cannot be a file name"
        )));
    }
    Ok(())
}

/// Write `bytes` to a new file `path` with `mode`, flushed.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), LocalError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("creating", path))?;
    f.write_all(bytes).map_err(io_err("writing", path))?;
    f.sync_all().map_err(io_err("writing", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", path))?;
    Ok(())
}

/// Convert `file` without running anything (what `play` would run, and its warnings).
pub fn convert(engine: &Engine, file: &Path) -> Result<Play, LocalError> {
    let src = std::fs::read_to_string(file).map_err(|source| LocalError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let dir = play_dir(engine, &file_id(file));
    play(
        &src,
        Some(file),
        &PlayOptions {
            config_dir: dir.join("configmaps"),
        },
    )
    .map_err(LocalError::Invalid)
}

/// `aac kube play FILE`: run what `file` describes. On any failure, whatever was made for it
/// is removed again.
pub async fn play_file(
    engine: &Engine,
    file: &Path,
    opts: LocalOptions,
) -> Result<PlayReport, LocalError> {
    let converted = convert(engine, file)?;
    let id = file_id(file);
    let dir = play_dir(engine, &id);
    if let Some(prev) = read_json::<Played>(&dir.join(PLAYED_FILE))? {
        let live: Vec<&str> = prev
            .containers
            .iter()
            .filter(|c| engine.load(&c.id).is_ok())
            .map(|c| c.name.as_str())
            .chain(
                prev.groups
                    .iter()
                    .filter(|g| engine.is_agent_group(g))
                    .map(String::as_str),
            )
            .collect();
        if !live.is_empty() {
            return Err(LocalError::Refused(format!(
                "{} is played already ({}): take it down first with `aac kube down {}`",
                file.display(),
                live.join(", "),
                file.display()
            )));
        }
    }
    let mut report = PlayReport {
        warnings: converted.warnings.iter().map(ToString::to_string).collect(),
        ..PlayReport::default()
    };
    let mut played = Played {
        file: absolute(file),
        volumes: converted
            .volumes
            .iter()
            .filter(|v| v.ephemeral)
            .map(|v| v.name.clone())
            .collect(),
        ..Played::default()
    };
    match run_all(
        engine,
        &converted,
        &dir,
        &id,
        opts,
        &mut played,
        &mut report,
    )
    .await
    {
        Ok(()) => Ok(report),
        Err(e) => {
            // Leave nothing: the containers and groups made so far, the secrets, the files,
            // the record.
            let _ = write_json(&dir.join(PLAYED_FILE), &played);
            if let Err(de) = take_down(engine, &id, Some(played)).await {
                tracing::warn!("removing what was played before the failure: {de}");
            }
            Err(e)
        }
    }
}

/// Put the file's Secrets into the store (see the module's notes); returns the file's Secret
/// name -> store name.
fn store_secrets(
    engine: &Engine,
    p: &Play,
    dir: &Path,
    id: &str,
    played: &mut Played,
) -> Result<BTreeMap<String, String>, LocalError> {
    let store = engine.secrets();
    let mut names = BTreeMap::new();
    for s in &p.secrets {
        let local = store_secret_name(id, &s.name);
        aac_runtime::secrets::store::check_name(&local)?;
        let values: BTreeMap<String, SecretValue> = s
            .data
            .iter()
            .map(|(k, v)| (k.clone(), SecretValue::new(v.clone())))
            .collect();
        if store.exists(&local) {
            // There before (made by hand, or left by a play whose record is lost): used as it
            // is when it holds the same keys and values, and kept by `down`.
            let old = store.secret(&local)?;
            if old.values != values {
                return Err(LocalError::Refused(format!(
                    "Secret {}: the secrets store has a secret {local} with other keys or \
                     values; remove it (`aac secret rm {local}`) or rename the Secret",
                    s.name
                )));
            }
        } else {
            // Recorded first, so that `down` finds it whatever happens next.
            played.created_secrets.push(local.clone());
            played.secret_names.insert(local.clone(), s.name.clone());
            write_json(&dir.join(PLAYED_FILE), &*played)?;
            store.write(&local, values, WriteMode::Create)?;
        }
        played.secret_names.insert(local.clone(), s.name.clone());
        names.insert(s.name.clone(), local);
    }
    write_json(&dir.join(PLAYED_FILE), &*played)?;
    Ok(names)
}

async fn run_all(
    engine: &Engine,
    p: &Play,
    dir: &Path,
    id: &str,
    opts: LocalOptions,
    played: &mut Played,
    report: &mut PlayReport,
) -> Result<(), LocalError> {
    create_private_dir(&engine.dirs().data.join("kube"))?;
    create_private_dir(dir)?;
    write_json(&dir.join(PLAYED_FILE), &*played)?;

    // ConfigMaps: files the pods mount (their data is not secret: readable, 0644).
    if !p.config_maps.is_empty() {
        create_private_dir(&dir.join("configmaps"))?;
    }
    for cm in &p.config_maps {
        component("ConfigMap", &cm.name)?;
        create_private_dir(&cm.dir)?;
        std::fs::set_permissions(&cm.dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting the mode of", &cm.dir))?;
        for (k, v) in &cm.data {
            component(&format!("ConfigMap {} key", cm.name), k)?;
            write_file(&cm.dir.join(k), v, 0o644)?;
        }
    }
    let secret_names = store_secrets(engine, p, dir, id, played)?;
    report.secrets = secret_names.clone();

    let mut started: Vec<Container> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for pa in &p.agents {
        let name = pa.agent.metadata.name.clone();
        let mut agent = pa.agent.clone();
        agent
            .metadata
            .labels
            .insert(PLAY_LABEL.to_string(), id.to_string());
        agent
            .metadata
            .labels
            .insert(SOURCE_LABEL.to_string(), pa.source.replace('/', "."));
        with_store_names(&mut agent, &secret_names);
        let scaled = pa.replicas > 1 || agent.spec.autoscaling.as_ref().is_some_and(|a| a.enabled);
        if !scaled && is_scaled(&agent) {
            // One replica and no autoscaler: one container, as a Pod.
            agent.spec.scaling = None;
        }
        let object = |source| LocalError::Object {
            object: format!("{} ({name})", pa.source),
            source,
        };
        if scaled {
            if engine.is_agent_group(&name) {
                // Not this file's: `down` after the failure must leave it alone.
                return Err(LocalError::Refused(format!(
                    "{}: agent {name} is already up (remove it with `aac down {name}`)",
                    pa.source
                )));
            }
            played.groups.push(name.clone());
            write_json(&dir.join(PLAYED_FILE), &*played)?;
            let up = engine
                .up(UpOptions {
                    agent,
                    name: Some(name.clone()),
                    runtime: opts.runtime,
                    agent_file: None,
                })
                .await
                .map_err(object)?;
            for w in &up.warnings {
                report.warnings.push(format!("{name}: {w}"));
            }
            for c in up.containers {
                report.containers.push(PlayedContainer {
                    name: c.rec.name.clone(),
                    id: c.rec.id.clone(),
                    source: pa.source.clone(),
                });
                started.push(c);
            }
            report.groups.push(name.clone());
            groups.push(name);
            continue;
        }
        played.containers.push(PlayedContainer {
            name: name.clone(),
            id: String::new(),
            source: pa.source.clone(),
        });
        write_json(&dir.join(PLAYED_FILE), &*played)?;
        let (created, run) = engine
            .run(CreateOptions {
                agent,
                name: Some(name.clone()),
                runtime: opts.runtime,
                auto_remove: false,
                interactive: false,
                tty: false,
                image_arg: None,
                from_file: true,
                agent_file: None,
            })
            .await
            .map_err(object)?;
        if let Some(last) = played.containers.last_mut() {
            last.id = created.container.rec.id.clone();
            report.containers.push(last.clone());
        }
        write_json(&dir.join(PLAYED_FILE), &*played)?;
        for w in created.warnings.iter().chain(&run.warnings) {
            report.warnings.push(format!("{name}: {w}"));
        }
        started.push(created.container);
    }
    if opts.wait_healthy {
        for c in &started {
            engine.wait_healthy(c).await?;
        }
        for g in &groups {
            // ...and the supervisor sends each replica traffic.
            engine.wait_serving(g, Duration::from_secs(60)).await?;
        }
    }
    Ok(())
}

/// `aac kube down FILE`: remove every container played from `file`, its ephemeral volumes,
/// ConfigMap and Secret files. Persistent volumes (claims) stay, as with `aac rm`.
pub async fn down_file(engine: &Engine, file: &Path) -> Result<DownReport, LocalError> {
    let id = file_id(file);
    let played = read_json::<Played>(&play_dir(engine, &id).join(PLAYED_FILE))?;
    let labelled = engine
        .list(true)
        .await?
        .iter()
        .any(|c| c.rec.agent.metadata.labels.get(PLAY_LABEL) == Some(&id));
    if played.is_none() && !labelled {
        return Err(LocalError::Refused(format!(
            "nothing played from {} is here",
            file.display()
        )));
    }
    take_down(engine, &id, played).await
}

async fn take_down(
    engine: &Engine,
    id: &str,
    played: Option<Played>,
) -> Result<DownReport, LocalError> {
    let mut report = DownReport::default();
    let mut errors: Vec<String> = Vec::new();
    // Scaled agents first: their supervisor would replace replicas removed under it.
    for g in played.iter().flat_map(|p| &p.groups) {
        if !engine.is_agent_group(g) {
            continue;
        }
        let replicas = group::load_status(engine.dirs(), g)
            .map(|st| st.replicas)
            .unwrap_or_default();
        match engine.down(g).await {
            Ok(()) => report.removed.extend(replicas.into_iter().map(|r| r.name)),
            Err(e) => errors.push(format!("{g}: {e}")),
        }
    }
    let mut seen = BTreeSet::new();
    let mut targets: Vec<Container> = Vec::new();
    for c in engine.list(true).await? {
        if c.rec
            .agent
            .metadata
            .labels
            .get(PLAY_LABEL)
            .map(String::as_str)
            == Some(id)
        {
            seen.insert(c.rec.id.clone());
            targets.push(c);
        }
    }
    if let Some(p) = &played {
        for pc in &p.containers {
            if pc.id.is_empty() || seen.contains(&pc.id) {
                continue;
            }
            if let Ok(c) = engine.load(&pc.id) {
                seen.insert(c.rec.id.clone());
                targets.push(c);
            }
        }
    }
    for c in targets {
        match engine.remove(&c, true).await {
            Ok(()) => report.removed.push(c.rec.name.clone()),
            Err(e) => errors.push(format!("{}: {e}", c.rec.name)),
        }
    }
    if !errors.is_empty() {
        // Keep the record: a second `down` tries again.
        return Err(LocalError::Refused(format!(
            "could not remove everything:\n{}",
            errors.join("\n")
        )));
    }
    let store = engine.secrets();
    for name in played.iter().flat_map(|p| &p.created_secrets) {
        match store.remove(name) {
            Ok(()) | Err(SecretsError::NotFound(_)) => {}
            Err(e) => errors.push(format!("removing secret {name}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(LocalError::Refused(format!(
            "could not remove everything:\n{}",
            errors.join("\n")
        )));
    }
    let volumes_dir = engine.dirs().volumes_dir();
    for v in played.iter().flat_map(|p| &p.volumes) {
        if component("volume", v).is_err() {
            continue;
        }
        let path = volumes_dir.join(v);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => report.volumes.push(v.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing volume {v}: {e}")),
        }
    }
    let dir = play_dir(engine, id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(LocalError::Refused(errors.join("\n")))
    }
}

/// The agent of a played container or scaled agent as the file asked for it: the file's
/// Secret names instead of the store's, without the labels `play` added.
pub fn as_played(engine: &Engine, mut agent: Agent) -> Agent {
    let root = engine.dirs().data.join("kube");
    if let Some(id) = agent.metadata.labels.get(PLAY_LABEL) {
        if component("id", id).is_ok() {
            if let Ok(Some(p)) = read_json::<Played>(&root.join(id).join(PLAYED_FILE)) {
                with_store_names(&mut agent, &p.secret_names);
            }
        }
    }
    agent.metadata.labels.remove(PLAY_LABEL);
    agent.metadata.labels.remove(SOURCE_LABEL);
    agent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_follow_the_store_names() {
        let mut agent = aac_agent::load_str(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata: {name: a}\nspec:\n  image: x\n  environment:\n    - {name: T, from: secret, secretName: api, secretKey: token}\n    - {name: U, from: secret, secretName: other, secretKey: k}\n  secrets:\n    - {name: token, from: secret, secretName: api, secretKey: token}\n",
            None,
            Path::new("/"),
        )
        .unwrap();
        let id = "0123456789abcdef";
        let names: BTreeMap<String, String> =
            [("api".to_string(), store_secret_name(id, "api"))].into();
        with_store_names(&mut agent, &names);
        let refs: Vec<String> = aac_runtime::secrets::refs::uses(&agent)
            .into_iter()
            .map(|u| u.secret)
            .collect();
        assert_eq!(
            refs,
            [
                "kube.0123456789abcdef.api",
                "other",
                "kube.0123456789abcdef.api"
            ]
        );
        assert!(aac_runtime::secrets::store::check_name(&refs[0]).is_ok());
    }

    #[test]
    fn the_file_id_follows_the_path_not_the_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "x").unwrap();
        let id = file_id(&f);
        assert_eq!(id.len(), 16);
        assert_eq!(file_id(&dir.path().join(".").join("a.yaml")), id);
        assert_ne!(file_id(&dir.path().join("b.yaml")), id);
        // a removed file keeps its id (down after the file is gone)
        std::fs::remove_file(&f).unwrap();
        assert_eq!(file_id(&f), id);
    }

    #[test]
    fn keys_cannot_leave_their_folder() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(component("key", bad).is_err(), "{bad:?}");
        }
        assert!(component("key", "site.conf").is_ok());
        assert!(component("key", "..data").is_ok());
    }
}
