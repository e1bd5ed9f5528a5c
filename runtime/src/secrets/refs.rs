//! The secrets an agent uses: `spec.secrets[]` (files) and `from: secret` environment
//! variables, resolved against the [`Store`].

use std::path::Path;

use crate::agent::{Agent, EnvSource, Positions};

use super::store::{SecretValue, Store};
use super::SecretsError;

/// How an agent takes a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseKind {
    /// Environment variable `var`.
    Env { var: String },
    /// File `/run/secrets/<file>`.
    File { file: String },
}

/// One reference to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// The agent.yaml field: `spec.environment[2]`, `spec.secrets[0]`.
    pub field: String,
    pub secret: String,
    /// Empty: the secret's only key (the `from: secret` shorthand).
    pub key: String,
    pub kind: UseKind,
}

/// Sources `spec.secrets[].from` may name: both read the local store.
pub const FILE_SOURCES: &[&str] = &["secret", "kubernetes-secret"];

/// Every reference `agent` makes, in agent.yaml order (environment first).
pub fn uses(agent: &Agent) -> Vec<SecretUse> {
    let mut out = Vec::new();
    for (i, e) in agent.spec.environment.iter().enumerate() {
        if let EnvSource::Secret {
            secret_name,
            secret_key,
        } = &e.source
        {
            out.push(SecretUse {
                field: format!("spec.environment[{i}]"),
                secret: if secret_name.is_empty() {
                    e.name.clone()
                } else {
                    secret_name.clone()
                },
                key: secret_key.clone(),
                kind: UseKind::Env {
                    var: e.name.clone(),
                },
            });
        }
    }
    for (i, s) in agent.spec.secrets.iter().enumerate() {
        out.push(SecretUse {
            field: format!("spec.secrets[{i}]"),
            secret: s.secret_name.clone(),
            key: s.secret_key.clone(),
            kind: UseKind::File {
                file: s.name.clone(),
            },
        });
    }
    out
}

/// Whether `agent` takes any secret as an environment variable.
pub fn has_env(agent: &Agent) -> bool {
    uses(agent)
        .iter()
        .any(|u| matches!(u.kind, UseKind::Env { .. }))
}

/// The names of the secrets `agent` uses.
pub fn secret_names(agent: &Agent) -> Vec<String> {
    let mut n: Vec<String> = uses(agent).into_iter().map(|u| u.secret).collect();
    n.sort();
    n.dedup();
    n
}

/// The value one reference names.
pub fn value(store: &Store, u: &SecretUse) -> Result<SecretValue, SecretsError> {
    if u.key.is_empty() {
        let mut s = store.secret(&u.secret)?;
        if s.values.len() != 1 {
            let keys: Vec<String> = s.values.keys().cloned().collect();
            let var = match &u.kind {
                UseKind::Env { var } => var.as_str(),
                UseKind::File { file } => file.as_str(),
            };
            return Err(SecretsError::Invalid(format!(
                "{var} takes secret {} without a secretKey, but that secret has {} keys ({}): \
                 name one with secretKey",
                u.secret,
                keys.len(),
                keys.join(", ")
            )));
        }
        let key = s.values.keys().next().cloned().unwrap_or_default();
        return Ok(s
            .values
            .remove(&key)
            .unwrap_or_else(|| SecretValue::new(Vec::new())));
    }
    store.get(&u.secret, &u.key)
}

/// Where a field is: `agent.yaml:LINE:COL: field` when the agent came from `file`.
pub fn locate(field: &str, file: Option<&Path>) -> String {
    locate_first(&[field], file)
}

/// [`locate`] for the first of `fields` the file has (the most precise first); the last one
/// names the place when none is found.
fn locate_first(fields: &[&str], file: Option<&Path>) -> String {
    let fallback = fields.last().copied().unwrap_or_default().to_string();
    let Some(file) = file else {
        return fallback;
    };
    let Ok(src) = std::fs::read_to_string(file) else {
        return fallback;
    };
    let positions = Positions::from_str(&src, Some(file));
    for field in fields {
        if let Some(loc) = positions.value(field) {
            return format!("{}:{}:{}: {field}", file.display(), loc.line, loc.column);
        }
    }
    fallback
}

/// Where the problem of reference `u` is: its `secretName` for a missing secret (its `name`
/// in the shorthand), its `secretKey` for a missing key, else the entry.
fn locate_problem(u: &SecretUse, e: &SecretsError, file: Option<&Path>) -> String {
    let entry = u.field.as_str();
    let name_field = match u.kind {
        UseKind::Env { .. } if u.key.is_empty() => "name",
        _ => "secretName",
    };
    let precise = match e {
        SecretsError::NotFound(_) => format!("{entry}.{name_field}"),
        SecretsError::NoKey { .. } => format!("{entry}.secretKey"),
        _ => entry.to_string(),
    };
    locate_first(&[precise.as_str(), entry], file)
}

/// Check every reference of `agent` against `store` (before anything is created): the first
/// missing secret or key, or a value an environment variable cannot hold, is an error naming
/// the secret and the agent.yaml line.
pub fn check(store: &Store, agent: &Agent, file: Option<&Path>) -> Result<(), SecretsError> {
    for (i, s) in agent.spec.secrets.iter().enumerate() {
        if !FILE_SOURCES.contains(&s.from.as_str()) {
            return Err(SecretsError::Reference {
                at: locate(&format!("spec.secrets[{i}].from"), file),
                message: format!(
                    "{:?} is not a secret source aac reads (secret or kubernetes-secret)",
                    s.from
                ),
            });
        }
        if s.name.contains('/') || s.name.starts_with("..") || s.name == "." {
            return Err(SecretsError::Reference {
                at: locate(&format!("spec.secrets[{i}].name"), file),
                message: format!("{:?} is not a file name for /run/secrets", s.name),
            });
        }
    }
    for u in uses(agent) {
        let v = value(store, &u).map_err(|e| SecretsError::Reference {
            at: locate_problem(&u, &e, file),
            message: e.to_string(),
        })?;
        if let UseKind::Env { var } = &u.kind {
            if v.as_env().is_none() {
                return Err(SecretsError::Reference {
                    at: locate(&u.field, file),
                    message: format!(
                        "{var}: the value of secret {} is not text without NUL bytes, so it \
                         cannot be an environment variable (take it as a file in spec.secrets)",
                        u.secret
                    ),
                });
            }
        }
    }
    Ok(())
}
