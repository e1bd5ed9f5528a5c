//! Agents the Kubernetes tests export: every example agent and the agents in tests/data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aac_agent::Agent;
use aac_kube::SecretSource;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// `(label, agent)` for examples/*/agent.yaml and tests/data/agents/*.yaml, sorted.
pub fn agents() -> Vec<(String, Agent)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("agent.yaml").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let f = d.join("agent.yaml");
        let a = aac_agent::load_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.push((
            format!("examples/{}", d.file_name().unwrap().to_string_lossy()),
            a,
        ));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(data().join("agents"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let a = aac_agent::load_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.push((
            format!("data/{}", f.file_name().unwrap().to_string_lossy()),
            a,
        ));
    }
    assert!(out.len() >= 7, "{} agents", out.len());
    out
}

/// An in-memory secrets store.
#[derive(Default)]
pub struct Store(pub BTreeMap<String, BTreeMap<String, Vec<u8>>>);

impl Store {
    pub fn with(mut self, name: &str, key: &str, value: &str) -> Store {
        self.0
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.as_bytes().to_vec());
        self
    }
}

impl SecretSource for Store {
    fn keys(&self, name: &str) -> Result<Vec<String>, String> {
        self.0
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .ok_or_else(|| format!("secret {name} does not exist"))
    }
    fn value(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        self.0
            .get(name)
            .and_then(|m| m.get(key))
            .cloned()
            .ok_or_else(|| format!("secret {name} has no key {key}"))
    }
}
