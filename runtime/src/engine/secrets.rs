//! Secrets verbs that touch containers: who uses a secret, a new version reaching running
//! agents (files swapped in place; agents taking it as environment need a restart), removal
//! refused while in use.

use std::collections::BTreeMap;

use crate::secrets::refs::{self, UseKind};
use crate::secrets::{delivery, SecretMeta, SecretValue, SecretsError, Store, WriteMode};

use super::{Container, Engine, EngineError, Result};

/// A container using a secret.
#[derive(Debug, Clone)]
pub struct SecretUser {
    pub container: Container,
    /// It takes the secret as an environment variable.
    pub env: bool,
    /// It takes the secret as a file in /run/secrets.
    pub file: bool,
}

/// What `aac secret update` did.
#[derive(Debug, Clone)]
pub struct SecretUpdate {
    pub meta: SecretMeta,
    /// Running containers whose /run/secrets now holds the new version.
    pub refreshed: Vec<String>,
    /// Containers that take the secret as environment: they see the new value after a restart.
    pub needs_restart: Vec<String>,
    /// Containers whose files could not be refreshed, with why.
    pub failed: Vec<(String, String)>,
}

impl Engine {
    /// This user's secrets store.
    pub fn secrets(&self) -> Store {
        Store::new(&self.dirs)
    }

    /// Every container (running or not) whose agent uses secret `name`.
    pub fn secret_users(&self, name: &str) -> Result<Vec<SecretUser>> {
        let mut out = Vec::new();
        for c in self.all()? {
            let uses: Vec<_> = refs::uses(&c.rec.agent)
                .into_iter()
                .filter(|u| u.secret == name)
                .collect();
            if uses.is_empty() {
                continue;
            }
            out.push(SecretUser {
                env: uses.iter().any(|u| matches!(u.kind, UseKind::Env { .. })),
                file: uses.iter().any(|u| matches!(u.kind, UseKind::File { .. })),
                container: c,
            });
        }
        out.sort_by(|a, b| a.container.rec.name.cmp(&b.container.rec.name));
        Ok(out)
    }

    /// Write a new version of secret `name` and bring it to the containers using it.
    pub async fn update_secret(
        &self,
        name: &str,
        values: BTreeMap<String, SecretValue>,
        mode: WriteMode,
    ) -> Result<SecretUpdate> {
        let meta = self.secrets().write(name, values, mode)?;
        let mut update = SecretUpdate {
            meta,
            refreshed: Vec::new(),
            needs_restart: Vec::new(),
            failed: Vec::new(),
        };
        for u in self.secret_users(name)? {
            let running = self.is_running(&u.container).await;
            let cname = u.container.rec.name.clone();
            if u.env && running {
                update.needs_restart.push(cname.clone());
            }
            if u.file && running {
                match delivery::refresh(&self.dirs, &u.container.rec) {
                    Ok(true) => update.refreshed.push(cname),
                    Ok(false) => {}
                    Err(e) => update.failed.push((cname, e.to_string())),
                }
            }
        }
        Ok(update)
    }

    /// Remove secret `name`: refused while a container uses it, unless `force`.
    pub fn remove_secret(&self, name: &str, force: bool) -> Result<()> {
        if !self.secrets().exists(name) {
            return Err(SecretsError::NotFound(name.to_string()).into());
        }
        let users = self.secret_users(name)?;
        if !users.is_empty() && !force {
            let names: Vec<&str> = users
                .iter()
                .map(|u| u.container.rec.name.as_str())
                .collect();
            return Err(EngineError::State(format!(
                "secret {name} is used by container{} {}: remove {} first or use `aac secret rm -f`",
                if names.len() == 1 { "" } else { "s" },
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" },
            )));
        }
        Ok(self.secrets().remove(name)?)
    }
}
