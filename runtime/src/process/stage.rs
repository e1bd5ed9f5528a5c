//! The steps of the container set-up and how a failed one is reported back to the parent:
//! shared by the parent ([`super`]) and what runs after fork ([`super::child`],
//! [`super::mounts`]), which import nothing else from the parent's module.

use nix::errno::Errno;

/// The step of the container set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    UserNamespace = 1,
    Namespaces,
    Fork,
    Sync,
    Stdio,
    Hostname,
    Mounts,
    Pivot,
    MaskedPaths,
    ReadonlyPaths,
    Rlimits,
    User,
    Capabilities,
    NoNewPrivs,
    Seccomp,
    Cwd,
    Exec,
    Cgroup,
}

impl Stage {
    pub(crate) const ALL: [Stage; 18] = [
        Stage::UserNamespace,
        Stage::Namespaces,
        Stage::Fork,
        Stage::Sync,
        Stage::Stdio,
        Stage::Hostname,
        Stage::Mounts,
        Stage::Pivot,
        Stage::MaskedPaths,
        Stage::ReadonlyPaths,
        Stage::Rlimits,
        Stage::User,
        Stage::Capabilities,
        Stage::NoNewPrivs,
        Stage::Seccomp,
        Stage::Cwd,
        Stage::Exec,
        Stage::Cgroup,
    ];

    pub(crate) fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u8 == b)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::UserNamespace => "creating the user namespace",
            Stage::Namespaces => "creating namespaces",
            Stage::Fork => "forking the container process",
            Stage::Sync => "waiting for the parent",
            Stage::Stdio => "setting up stdio",
            Stage::Hostname => "setting the hostname",
            Stage::Mounts => "setting up mounts",
            Stage::Pivot => "switching to the new root",
            Stage::MaskedPaths => "masking paths",
            Stage::ReadonlyPaths => "making paths read-only",
            Stage::Rlimits => "setting rlimits",
            Stage::User => "switching user",
            Stage::Capabilities => "setting capabilities",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Seccomp => "installing seccomp",
            Stage::Cwd => "changing to the working directory",
            Stage::Exec => "executing the command",
            Stage::Cgroup => "joining the container's cgroups",
        })
    }
}

/// A failed step in the child.
#[derive(Debug)]
pub(crate) struct Fail {
    pub stage: Stage,
    pub errno: Errno,
    pub detail: String,
}

impl Fail {
    pub fn new(stage: Stage, errno: Errno, detail: impl Into<String>) -> Fail {
        Fail {
            stage,
            errno,
            detail: detail.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.stage as u8];
        out.extend_from_slice(&(self.errno as i32).to_le_bytes());
        out.extend_from_slice(self.detail.as_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Option<Fail> {
        let stage = Stage::from_u8(*buf.first()?)?;
        let errno = i32::from_le_bytes(buf.get(1..5)?.try_into().ok()?);
        Some(Fail {
            stage,
            errno: Errno::from_raw(errno),
            detail: String::from_utf8_lossy(buf.get(5..).unwrap_or_default()).into_owned(),
        })
    }
}
