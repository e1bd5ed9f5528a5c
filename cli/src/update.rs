//! `aac update`: new limits or restart policy for running containers, as `docker update`.

use aac_runtime::agent::values;
use aac_runtime::engine::UpdateRequest;
use anyhow::anyhow;
use clap::Args;

use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::flags::parse_pids_limit;

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// CPU limit (1.5, 500m).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit (512m, 1g, 256Mi).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Maximum number of processes (-1 or 0: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<String>,
    /// Restart policy (no, on-failure[:N], always, unless-stopped).
    #[arg(long)]
    pub restart: Option<String>,
    /// Containers, or scaled agents (every replica).
    #[arg(required = true)]
    pub names: Vec<String>,
}

fn bad(flag: &str, e: String) -> CliError {
    CliError::aac(anyhow!("{flag}: {e}"))
}

pub async fn update(ctx: &Ctx, args: UpdateArgs) -> CliResult<u8> {
    let req = UpdateRequest {
        cpus: args
            .cpus
            .as_deref()
            .map(values::parse_cpu)
            .transpose()
            .map_err(|e| bad("--cpus", e))?,
        memory: args
            .memory
            .as_deref()
            .map(values::parse_memory)
            .transpose()
            .map_err(|e| bad("--memory", e))?,
        pids: args
            .pids_limit
            .as_deref()
            .map(parse_pids_limit)
            .transpose()
            .map_err(|e| bad("--pids-limit", e))?,
        restart: args
            .restart
            .as_deref()
            .map(values::parse_restart_policy)
            .transpose()
            .map_err(|e| bad("--restart", e))?,
    };
    let engine = ctx.engine()?;
    let mut all_ok = true;
    for n in &args.names {
        // A scaled agent's name updates every replica it runs now.
        let targets = if engine.is_agent_group(n) {
            engine.agent_group(n).await?.replicas
        } else {
            match engine.load(n) {
                Ok(c) => vec![c],
                Err(e) => {
                    eprintln!("aac: {n}: {e}");
                    all_ok = false;
                    continue;
                }
            }
        };
        let mut ok = true;
        for c in targets {
            if let Err(e) = engine.update(&c, &req).await {
                eprintln!("aac: {}: {e}", c.rec.name);
                ok = false;
            }
        }
        if ok {
            println!("{n}");
        }
        all_ok &= ok;
    }
    Ok(u8::from(!all_ok))
}
