//! Typed errors of the containerd backend.

use std::path::PathBuf;

use tonic::Code;

/// Result alias of the containerd backend.
pub type Result<T, E = CtrdError> = std::result::Result<T, E>;

/// Everything that can go wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum CtrdError {
    /// The socket is missing or nobody answers on it.
    #[error(
        "containerd is not reachable at {}: {reason}; start it with `systemctl start containerd` \
         or `containerd &`, or pass --address (or set CONTAINERD_ADDRESS)",
        address.display()
    )]
    Unreachable { address: PathBuf, reason: String },

    /// A namespace name containerd would reject.
    #[error("invalid containerd namespace {0:?}: use letters, digits and single '.', '_' or '-' between them")]
    InvalidNamespace(String),

    /// The named object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },

    /// The named object exists already.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },

    /// The container's command does not exist in its image (exit code 127).
    #[error("container {id}: command not found: {message}")]
    CommandNotFound { id: String, message: String },

    /// The container's command exists but cannot be executed (exit code 126).
    #[error("container {id}: command cannot be executed: {message}")]
    CommandNotExecutable { id: String, message: String },

    /// The task still runs, so it cannot be deleted.
    #[error("container {0} is still running; stop it first")]
    TaskRunning(String),

    /// An image, archive or blob is malformed or unsupported.
    #[error("invalid image: {0}")]
    InvalidImage(String),

    /// A content digest did not match.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// An image reference that cannot be parsed.
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),

    /// Talking to an image registry failed (pull/push).
    #[error(transparent)]
    Registry(#[from] RegistryError),

    /// A gRPC call failed.
    #[error("containerd {op} failed: {code:?}: {message}")]
    Grpc {
        op: &'static str,
        code: Code,
        message: String,
    },

    /// Local file system error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// JSON (de)serialisation of an image document or spec.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

impl CtrdError {
    /// Wraps a gRPC status of operation `op`.
    pub fn grpc(op: &'static str, status: tonic::Status) -> Self {
        CtrdError::Grpc {
            op,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CtrdError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a JSON error with context.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        CtrdError::Json {
            context: context.into(),
            source,
        }
    }

    /// The exit code a CLI should use for this error when it stands for the container's
    /// command (docker's convention: 127 not found, 126 not executable).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CtrdError::CommandNotFound { .. } => Some(127),
            CtrdError::CommandNotExecutable { .. } => Some(126),
            _ => None,
        }
    }

    /// True when the error is a NotFound, from containerd or ours.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CtrdError::NotFound { .. }
                | CtrdError::Grpc {
                    code: Code::NotFound,
                    ..
                }
        )
    }
}

/// Maps a failed Tasks.Create/Start of container `id` to a typed error when runc says the
/// command cannot be run.
pub(crate) fn map_exec_failure(op: &'static str, id: &str, status: tonic::Status) -> CtrdError {
    let msg = status.message();
    // runc: `exec: "nosuch": executable file not found in $PATH`,
    //       `exec: "/nosuch": stat /nosuch: no such file or directory`,
    //       `exec: "/etc/passwd": permission denied`.
    if let Some(pos) = msg.find("exec: ") {
        let tail = &msg[pos..];
        let tail = tail.strip_suffix(": unknown").unwrap_or(tail).to_string();
        if tail.contains("executable file not found") || tail.contains("no such file or directory")
        {
            return CtrdError::CommandNotFound {
                id: id.to_string(),
                message: tail,
            };
        }
        if tail.contains("permission denied") || tail.contains("exec format error") {
            return CtrdError::CommandNotExecutable {
                id: id.to_string(),
                message: tail,
            };
        }
    }
    CtrdError::grpc(op, status)
}

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not have the manifest (tag or digest).
    #[error("image '{reference}' not found in registry {registry}")]
    NotFound { registry: String, reference: String },

    /// The registry wants credentials and none were given.
    #[error(
        "authentication required for {registry}: {reason}; run `aac login {registry}`, pass \
         --username/--password or set AAC_REGISTRY_USER and AAC_REGISTRY_PASSWORD"
    )]
    AuthRequired { registry: String, reason: String },

    /// The registry refused the credentials (or the token they bought).
    #[error("unauthorized: {message} (registry {registry})")]
    Unauthorized { registry: String, message: String },

    /// No connection could be made, or it broke.
    #[error("registry {address} is not reachable: {reason}")]
    Unreachable { address: String, reason: String },

    /// An unexpected HTTP status.
    #[error("registry {registry}: {request}: HTTP {status}: {message}")]
    Http {
        registry: String,
        request: String,
        status: u16,
        message: String,
    },

    /// The registry answered something we cannot use.
    #[error("registry {registry}: {message}")]
    Protocol { registry: String, message: String },
}
