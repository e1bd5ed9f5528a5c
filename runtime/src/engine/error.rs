//! What an engine verb can fail with, and the docker-style exit code each means.

use crate::agent::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input: a value the host cannot satisfy, a name in use, ...
    #[error("{0}")]
    Invalid(String),
    #[error("invalid agent:\n{0}")]
    Agent(Diagnostics),
    /// The container is not in a state the verb needs.
    #[error("{0}")]
    State(String),
    /// The first start failed (nothing is left of the container); `code` is 126/127 when its
    /// command could not be run, else 125.
    #[error("{message}")]
    Start { code: i32, message: String },
    #[error(transparent)]
    Records(#[from] crate::state::StateError),
    #[error(transparent)]
    Network(#[from] crate::network::NetError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Containerd(#[from] crate::containerd::CtrdError),
    #[error(transparent)]
    Spec(#[from] crate::spec::builder::SpecError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Events(#[from] crate::events::EventError),
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
}

impl EngineError {
    /// docker's exit codes: 126 when the command cannot be executed, 127 when it is not
    /// found, 125 for everything else aac reports.
    pub fn exit_code(&self) -> u8 {
        let code = match self {
            EngineError::Start { code, .. } => *code,
            EngineError::Backend(e) => e.exit_code(),
            EngineError::Containerd(e) => e.exit_code().unwrap_or(125),
            _ => 125,
        };
        u8::try_from(code).unwrap_or(125)
    }
}
