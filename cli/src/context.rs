//! What every command shares: the global options and the engine.

use std::path::PathBuf;
use std::sync::OnceLock;

use aac_runtime::containerd::{self, Client};
use aac_runtime::engine::{Engine, EngineConfig};
use aac_runtime::record::ContainerdTarget;
use clap::Args;

use crate::exit::CliResult;

/// Options of every command that talks to containerd.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// containerd socket (default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock).
    #[arg(long, global = true, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
    /// containerd namespace (default: $AAC_NAMESPACE, else "aac").
    #[arg(long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// containerd runtime of new containers: `aac` (aac's own shim, containerd-shim-aac-v2),
    /// `runc` (containerd's io.containerd.runc.v2) or a shim binary's absolute path.
    #[arg(
        long = "oci-runtime",
        global = true,
        env = "AAC_CONTAINERD_RUNTIME",
        value_name = "RUNTIME"
    )]
    pub oci_runtime: Option<String>,
}

pub struct Ctx {
    pub global: Global,
    engine: OnceLock<Engine>,
}

impl Ctx {
    pub fn new(global: Global) -> Ctx {
        Ctx {
            global,
            engine: OnceLock::new(),
        }
    }

    /// The engine (state folders checked on first use).
    pub fn engine(&self) -> CliResult<&Engine> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let e = Engine::new(EngineConfig {
            address: self.global.address.clone(),
            namespace: self.global.namespace.clone(),
        })?
        .with_notices(std::sync::Arc::new(|n: &str| eprintln!("aac: {n}")));
        Ok(self.engine.get_or_init(|| e))
    }

    pub fn containerd_target(&self) -> ContainerdTarget {
        ContainerdTarget {
            address: containerd::default_address(self.global.address.as_deref()),
            namespace: containerd::default_namespace(self.global.namespace.as_deref()),
        }
    }

    /// Connect to containerd; the error says where it looked and how to start it.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let t = self.containerd_target();
        Ok(Client::connect(&t.address, &t.namespace).await?)
    }
}

/// With the calling user's rootless containerd as the target, join RootlessKit's user, mount
/// and network namespaces (as nerdctl does), so that network namespaces, CNI and bind mounts
/// are made where containerd and runc run. Nothing to do for root, for another containerd,
/// or when already inside. Call while the process is still single-threaded.
pub fn enter_rootlesskit(global: &Global) -> anyhow::Result<()> {
    use aac_runtime::rootlesskit::{self, Rootlesskit};
    if rootlesskit::entered_uid().is_some() || nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(socket) = rootlesskit::user_containerd_socket() else {
        return Ok(());
    };
    if containerd::default_address(global.address.as_deref()) != socket {
        return Ok(());
    }
    let Some(kit) = Rootlesskit::find()? else {
        tracing::debug!(socket = %socket.display(), "rootless containerd without RootlessKit state: not entering namespaces");
        return Ok(());
    };
    let uid = nix::unistd::geteuid().as_raw();
    // Still single-threaded (see main): nothing reads the environment concurrently.
    std::env::set_var("CONTAINERD_ADDRESS", &socket);
    std::env::set_var(rootlesskit::UID_ENV, uid.to_string());
    kit.enter()?;
    tracing::debug!(
        pid = kit.child_pid,
        "running inside RootlessKit's namespaces"
    );
    Ok(())
}
