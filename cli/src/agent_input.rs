//! Reading an agent: agent.yaml and/or docker-style flags into one validated model.
//! `aac validate` and `aac spec` live here; `run` and `up` reuse [`load_agent`].

use std::path::{Path, PathBuf};

use aac_runtime::agent::flags::RunFlags;
use aac_runtime::agent::{self, Agent, Diagnostics};
use aac_runtime::spec::builder::{self, HostLimits, SpecContext};
use anyhow::Context;
use clap::Args;

use crate::context::Ctx;
use crate::exit::{CliError, CliResult};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// agent.yaml, or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// agent.yaml, or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Container name (default: metadata.name); sets the hostname.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// `agent.yaml` inside `path` when `path` is a folder.
pub fn agent_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("agent.yaml")
    } else {
        path.to_path_buf()
    }
}

/// Load agent.yaml at `path`, apply CLI flags over it and validate the result: every problem
/// is reported at once.
pub fn load_agent(path: &Path, flags: &RunFlags) -> Result<Agent, Diagnostics> {
    let file = agent_file(path);
    let (mut agent, positions) = agent::load_file_with_positions(&file)?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let host_env = |k: &str| std::env::var(k).ok();
    let mut problems = flags.apply(&mut agent, &base, &host_env);
    problems.extend(agent::validate(&agent, Some(&positions)));
    if problems.is_empty() {
        Ok(agent)
    } else {
        Err(Diagnostics(problems))
    }
}

pub fn validate(args: ValidateArgs) -> CliResult<u8> {
    let file = agent_file(&args.path);
    match agent::load_file(&file) {
        Ok(a) => {
            println!("{}: agent {:?} is valid", file.display(), a.metadata.name);
            Ok(0)
        }
        Err(d) => {
            for problem in &d.0 {
                eprintln!("{problem}");
            }
            eprintln!(
                "{}: {} problem{}",
                file.display(),
                d.0.len(),
                if d.0.len() == 1 { "" } else { "s" }
            );
            Ok(1)
        }
    }
}

pub async fn spec(cli: &Ctx, args: SpecArgs) -> CliResult<u8> {
    let agent = load_agent(&args.path, &args.flags)
        .map_err(|d| CliError::aac(anyhow::anyhow!("invalid agent:\n{d}")))?;
    // The image's entrypoint, cmd, env and user shape the process: use them when containerd
    // has the image.
    let image = match cli.client().await {
        Ok(c) => c.image_config(&agent.image_ref()).await.ok(),
        Err(_) => None,
    };
    let volumes_dir = cli.dirs.volumes_dir();
    let name = args.name.unwrap_or_else(|| agent.metadata.name.clone());
    let host = HostLimits::current();
    // Secret values are never printed: the spec shows where each would come from.
    let secrets = |name: &str, key: &str| Ok(format!("<secret {name}/{key}>"));
    let ctx = SpecContext {
        container_id: &name,
        name: &name,
        image: image.as_ref(),
        host: &host,
        volumes_dir: &volumes_dir,
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
        secrets: &secrets,
    };
    let spec = match builder::build(&agent, &ctx) {
        Ok(s) => s,
        Err(builder::SpecError::NoCommand) => {
            return Err(CliError::aac(anyhow::anyhow!(
                "the agent has no command: set spec.command, or import or pull its image {} so its entrypoint is known",
                agent.image_ref()
            )))
        }
        Err(e) => return Err(CliError::aac(e.into())),
    };
    println!(
        "{}",
        builder::to_json(&spec).context("serializing the spec")?
    );
    Ok(0)
}
