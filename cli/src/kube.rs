//! `aac kube`: Kubernetes manifests from an agent.yaml or a running agent (`generate`), and
//! Kubernetes YAML run on this host (`play`, `down`) through the engine (aac_kube::local).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aac_kube::local::{self, LocalError, LocalOptions};
use aac_kube::{FqdnPolicy, GenerateError, HostFiles, Options};
use aac_runtime::agent::{self, Agent, Positions};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};

use crate::agent_input::agent_file;
use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::run::RuntimeChoice;

#[derive(Subcommand, Debug)]
pub enum KubeCommand {
    /// Export an agent as Kubernetes manifests (Deployment, Service, HPA, ConfigMaps,
    /// PersistentVolumeClaims, NetworkPolicy), one multi-document YAML.
    Generate(GenerateArgs),
    /// Run the Deployments, Pods, Services, ConfigMaps and Secrets of Kubernetes YAML here.
    Play(PlayArgs),
    /// Remove everything `aac kube play FILE` made.
    Down(DownArgs),
}

#[derive(Args, Debug)]
pub struct PlayArgs {
    /// Kubernetes YAML (one or more documents).
    pub file: PathBuf,
    /// Which backend runs the containers.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// Wait until every container's health check (its probe) passes.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The Kubernetes YAML given to `aac kube play`.
    pub file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FqdnChoice {
    /// A CiliumNetworkPolicy with toFQDNs for spec.network.security.allowedHosts.
    Cilium,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// agent.yaml, a folder holding one, or the name of an agent aac runs.
    pub path: PathBuf,
    /// Write the manifests to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Enforce allowed host names with a CiliumNetworkPolicy (a NetworkPolicy cannot name
    /// hosts).
    #[arg(long, value_name = "KIND")]
    pub fqdn_policy: Option<FqdnChoice>,
    /// Write secret values into Secret objects (default: referenced by name only).
    #[arg(long)]
    pub include_secrets: bool,
    /// Export bind mounts as hostPath volumes (default: emptyDir, with a warning).
    #[arg(long)]
    pub host_path: bool,
}

pub async fn run(ctx: &Ctx, command: KubeCommand) -> CliResult<u8> {
    match command {
        KubeCommand::Generate(a) => generate(ctx, a),
        KubeCommand::Play(a) => play(ctx, a).await,
        KubeCommand::Down(a) => down(ctx, a).await,
    }
}

/// Whether the command talks to containerd.
pub fn uses_containerd(command: &KubeCommand) -> bool {
    match command {
        KubeCommand::Generate(_) => false,
        KubeCommand::Play(a) => a.runtime != RuntimeChoice::Process,
        KubeCommand::Down(_) => true,
    }
}

fn local_error(e: LocalError) -> CliError {
    let code = e.exit_code();
    let mut err = CliError::aac(anyhow!("{e}"));
    err.code = code;
    err
}

async fn play(ctx: &Ctx, args: PlayArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let report = local::play_file(
        engine,
        &args.file,
        LocalOptions {
            runtime: args.runtime.into(),
            wait_healthy: args.wait,
        },
    )
    .await
    .map_err(local_error)?;
    for w in &report.warnings {
        eprintln!("aac: warning: {w}");
    }
    for c in &report.containers {
        println!("{}", c.name);
    }
    Ok(0)
}

async fn down(ctx: &Ctx, args: DownArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let report = local::down_file(engine, &args.file)
        .await
        .map_err(local_error)?;
    for name in &report.removed {
        println!("{name}");
    }
    Ok(0)
}

/// `file:line:col: path: message` where the agent.yaml has the field.
fn located(positions: &Positions, path: &str, message: &str) -> String {
    let shown = positions.source_path(path);
    let field = if shown.is_empty() {
        message.to_string()
    } else {
        format!("{shown}: {message}")
    };
    match positions.value(path) {
        Some(l) => match &l.file {
            Some(f) => format!("{}:{}:{}: {field}", f.display(), l.line, l.column),
            None => format!("{}:{}: {field}", l.line, l.column),
        },
        None => field,
    }
}

/// The agent of a scaled agent or container aac knows by `name`, as it was asked to run
/// (without what `kube play` added).
fn recorded_agent(ctx: &Ctx, name: &str) -> CliResult<Agent> {
    let engine = ctx.engine()?;
    if engine.is_agent_group(name) {
        let rec = aac_runtime::scale::group::load_record(engine.dirs(), name)
            .map_err(|e| CliError::aac(anyhow!("{name}: {e}")))?;
        return Ok(local::as_played(engine, rec.agent));
    }
    let c = engine.load(name).map_err(|e| {
        CliError::aac(anyhow!(
            "{name}: no agent.yaml there, and no container of that name ({e})"
        ))
    })?;
    Ok(local::as_played(engine, c.rec.agent))
}

/// A PATH that is no file or folder and could be a container name.
fn looks_like_name(path: &Path) -> bool {
    let s = path.to_string_lossy();
    !s.is_empty() && !s.contains('/') && !path.exists()
}

fn generate(ctx: &Ctx, args: GenerateArgs) -> CliResult<u8> {
    let file = agent_file(&args.path);
    let (agent, positions) = if file.exists() {
        let decoded =
            agent::decode_file(&file).map_err(|d| CliError::aac(anyhow!("invalid agent:\n{d}")))?;
        let positions = decoded.positions.clone();
        let agent = agent::check(decoded, Vec::new())
            .map_err(|d| CliError::aac(anyhow!("invalid agent:\n{d}")))?;
        (agent, positions)
    } else if looks_like_name(&args.path) {
        let name = args.path.to_string_lossy();
        let agent = recorded_agent(ctx, &name)?;
        (agent, Positions::default())
    } else {
        return Err(CliError::aac(anyhow!(
            "{}: no agent.yaml there",
            args.path.display()
        )));
    };
    let secrets = local::StoreSecrets(ctx.engine()?.secrets());
    let opts = Options {
        fqdn_policy: match args.fqdn_policy {
            Some(FqdnChoice::Cilium) => FqdnPolicy::Cilium,
            None => FqdnPolicy::None,
        },
        include_secrets: args.include_secrets,
        host_path: args.host_path,
        // Keys of secrets named without one, and the values --include-secrets writes out.
        secrets: &secrets,
        files: &HostFiles,
    };
    let generated = match aac_kube::generate(&agent, &opts) {
        Ok(g) => g,
        Err(GenerateError::Fields(problems)) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| located(&positions, &p.path, &p.message))
                .collect();
            return Err(CliError::aac(anyhow!(
                "cannot export the agent:\n{}",
                lines.join("\n")
            )));
        }
    };
    for w in &generated.warnings {
        eprintln!("aac: warning: {}", located(&positions, &w.path, &w.message));
    }
    let text = aac_kube::to_yaml(&generated.manifests);
    match &args.output {
        Some(path) => write_private(path, &text, args.include_secrets)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the manifests")?;
        }
    }
    Ok(0)
}

/// Write `text` to `path`; 0600 when it holds secret values, else 0644.
fn write_private(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // an existing file keeps its mode on open: make it the one wanted
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
