//! Reading an agent: agent.yaml and/or docker-style flags into one validated model.
//! `aac validate` and `aac spec` live here; `run` and `up` reuse [`load_agent`].

use std::path::{Path, PathBuf};

use crate::flags::RunFlags;
use aac_runtime::agent::{self, Agent, Diagnostics};
use aac_runtime::spec::builder;
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
/// is reported at once. Notes on other spellings are printed, and the fields aac does not act
/// on are named in one line (`aac validate` shows where each is).
pub fn load_agent(path: &Path, flags: &RunFlags) -> Result<Agent, Diagnostics> {
    let file = agent_file(path);
    let mut decoded = agent::decode_file(&file)?;
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let host_env = |k: &str| std::env::var(k).ok();
    let problems = flags.apply(&mut decoded.agent, &base, &host_env);
    let (agent, notes) = agent::check_noted(decoded, problems)?;
    let (idle, spelled): (Vec<_>, Vec<_>) = notes
        .iter()
        .partition(|n| agent::notices::is_not_acted_on(n));
    for n in spelled {
        eprintln!("aac: note: {n}");
    }
    if !idle.is_empty() {
        let fields: Vec<&str> = idle.iter().map(|n| n.path.as_str()).collect();
        eprintln!(
            "aac: note: {} not acted on when running the agent (`aac validate {}` says why)",
            fields.join(", "),
            file.display()
        );
    }
    Ok(agent)
}

pub fn validate(args: ValidateArgs) -> CliResult<u8> {
    let file = agent_file(&args.path);
    // a file that cannot be read (missing, a FIFO, a device, too large) is bad input, aac's
    // failure: exit 125; problems found in a file that was read: exit 1
    let src = agent::source::read_agent_file(&file).map_err(|e| CliError::aac(e.into()))?;
    // so is a document built to exhaust the parser (too deep, an alias bomb)
    if let Err(e) = agent::limits::check(&src) {
        return Err(CliError::aac(anyhow::anyhow!(
            "{}:{}:{}: {e}",
            file.display(),
            e.line,
            e.column
        )));
    }
    match agent::decode_source(&src, &file).and_then(|d| agent::check_noted(d, Vec::new())) {
        Ok((a, notes)) => {
            for n in &notes {
                eprintln!("note: {n}");
            }
            println!("{}: agent {:?} is valid", file.display(), a.metadata.name);
            Ok(0)
        }
        Err(d) => {
            for problem in &d.0 {
                eprintln!(
                    "{}",
                    aac_runtime::secrets::redact::text(&problem.to_string())
                );
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

pub async fn spec(ctx: &Ctx, args: SpecArgs) -> CliResult<u8> {
    let agent = load_agent(&args.path, &args.flags)
        .map_err(|d| CliError::aac(anyhow::anyhow!("invalid agent:\n{d}")))?;
    let name = args.name.unwrap_or_else(|| agent.metadata.name.clone());
    let spec = ctx.engine()?.preview_spec(&agent, &name).await?;
    println!(
        "{}",
        builder::to_json(&spec).context("serializing the spec")?
    );
    Ok(0)
}
