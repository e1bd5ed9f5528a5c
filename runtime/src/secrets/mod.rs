//! Secrets: a per-user store ([`store`]), the references an agent.yaml makes to it
//! ([`refs`]: `spec.secrets`, `from: secret` / `from: kubernetes-secret` environment
//! variables and their `- name: OPENAI_API_KEY / from: secret` shorthand), their delivery to a
//! running agent ([`delivery`]: files on a private tmpfs at `/run/secrets/<name>` in
//! Kubernetes' `..data` layout, environment variables handed to the process without ever being
//! in the OCI spec) and [`redact`]ion of values wherever aac shows a spec or an error.
//!
//! Values exist only in the store, in the agent's tmpfs and in the memory of the process that
//! delivers them; records, specs, events and logs hold references (`secretName`/`secretKey`).

pub mod delivery;
pub mod redact;
pub mod refs;
pub mod store;

use std::path::PathBuf;

pub use delivery::SecretEnv;
pub use refs::{SecretUse, UseKind};
pub use store::{SecretMeta, SecretValue, Store, WriteMode};

/// What the secrets store and delivery fail with. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such secret: {0} (create it with `aac secret create {0} --from-file KEY=PATH`)")]
    NotFound(String),
    #[error("secret {0} already exists (use `aac secret update {0}` for a new version)")]
    Exists(String),
    #[error("secret {name} has no key {key:?} (its keys: {})", keys.join(", "))]
    NoKey {
        name: String,
        key: String,
        keys: Vec<String>,
    },
    #[error(
        "secret {name} is {size} bytes, larger than the limit of {} bytes",
        store::MAX_SECRET_BYTES
    )]
    TooLarge { name: String, size: usize },
    #[error("secret store file {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A reference in an agent.yaml that the store cannot satisfy; `at` is
    /// `agent.yaml:LINE:COL: spec.environment[0]` (or the field path alone).
    #[error("{at}: {message}")]
    Reference { at: String, message: String },
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
}
