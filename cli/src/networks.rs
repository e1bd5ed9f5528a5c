//! `aac network create|ls|inspect|rm|prune`.

use aac_runtime::network;
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::containers::Format;
use crate::context::Ctx;
use crate::exit::CliResult;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a user-defined bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show a network and the containers on it, as JSON.
    Inspect(NamesArgs),
    /// Remove networks (not while containers use them).
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Release the network resources of containers that no longer exist.
    Prune,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// IPv4 subnet in CIDR form (default: a free /24 from 10.88.0.0/16).
    #[arg(long)]
    pub subnet: Option<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: NetworkCommand) -> CliResult<u8> {
    match cmd {
        NetworkCommand::Create(a) => {
            let def = network::create_network(&ctx.dirs, &a.name, a.subnet.as_deref())?;
            println!("{}", def.id);
        }
        NetworkCommand::Ls(a) => {
            network::ensure_default_network(&ctx.dirs)?;
            let nets = network::list_networks(&ctx.dirs)?;
            if a.quiet {
                for n in &nets {
                    println!("{}", n.name);
                }
            } else if a.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&nets).context("json")?);
            } else {
                let rows: Vec<Vec<String>> = nets
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.chars().take(12).collect(),
                            n.name.clone(),
                            n.subnet.to_string(),
                            n.bridge.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    aac_runtime::stats::format_table(
                        &["NETWORK ID", "NAME", "SUBNET", "BRIDGE"],
                        &rows
                    )
                );
            }
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                out.push(network::inspect_network(&ctx.dirs, n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out).context("json")?);
        }
        NetworkCommand::Rm(a) => {
            for n in &a.names {
                network::remove_network(&ctx.dirs, n)?;
                println!("{n}");
            }
        }
        NetworkCommand::Prune => {
            let live = ctx.dirs.container_ids()?;
            for id in network::gc(&ctx.dirs, &live)? {
                println!("released {id}");
            }
        }
    }
    Ok(0)
}
