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
    /// Output format: table, json, or a Go template ('{{.Name}} {{.Subnet}}').
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(ctx: &Ctx, cmd: NetworkCommand) -> CliResult<u8> {
    match cmd {
        NetworkCommand::Create(a) => {
            let def = network::create_network(ctx.engine()?.dirs(), &a.name, a.subnet.as_deref())?;
            println!("{}", def.id);
        }
        NetworkCommand::Ls(a) => {
            let format: Format = crate::format::parse_arg(&a.format)?;
            network::ensure_default_network(ctx.engine()?.dirs())?;
            let nets = network::list_networks(ctx.engine()?.dirs())?;
            if a.quiet {
                for n in &nets {
                    println!("{}", n.name);
                }
            } else if format.is_json() {
                println!("{}", serde_json::to_string_pretty(&nets).context("json")?);
            } else if let Format::Template(t) = &format {
                let rows: Vec<serde_json::Value> = nets
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "ID": n.id.chars().take(12).collect::<String>(),
                            "Name": n.name,
                            "Driver": "bridge",
                            "Scope": "local",
                            "Subnet": n.subnet.to_string(),
                            "Bridge": n.bridge,
                        })
                    })
                    .collect();
                print!(
                    "{}",
                    t.render_all(
                        &rows,
                        &[
                            ("ID", "NETWORK ID"),
                            ("Name", "NAME"),
                            ("Driver", "DRIVER"),
                            ("Scope", "SCOPE"),
                            ("Subnet", "SUBNET"),
                            ("Bridge", "BRIDGE"),
                        ]
                    )?
                );
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
                out.push(network::inspect_network(ctx.engine()?.dirs(), n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out).context("json")?);
        }
        NetworkCommand::Rm(a) => {
            for n in &a.names {
                network::remove_network(ctx.engine()?.dirs(), n)?;
                println!("{n}");
            }
        }
        NetworkCommand::Prune => {
            let live = ctx.engine()?.dirs().container_ids()?;
            for id in network::gc(ctx.engine()?.dirs(), &live)? {
                println!("released {id}");
            }
        }
    }
    Ok(0)
}
