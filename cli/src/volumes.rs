//! `aac volume create|ls|inspect|rm|prune`: named volumes, shared by both backends.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use aac_runtime::volumes::Volume;
use anyhow::{anyhow, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::format::{parse_arg, Format};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes, as JSON (or --format).
    Inspect(InspectArgs),
    /// Remove volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused anonymous volumes (every unused one with --all).
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Labels (KEY=VALUE).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Volume driver: only "local".
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Driver options (the local driver takes none here).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only print volume names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter: name=, label=KEY[=VALUE], dangling=true|false, driver=local.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Output format: table, json, or a Go template ('{{.Name}}').
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Output format: json (default) or a Go template ('{{.Mountpoint}}').
    #[arg(short = 'f', long, default_value = "json")]
    pub format: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not fail when a volume does not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Also remove unused named volumes, not only anonymous ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

fn labels_of(args: &[String]) -> CliResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in args {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(CliError::aac(anyhow!("--label {l:?}: the key is empty")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `volume inspect` in docker's shape.
fn shape(v: &Volume, users: usize) -> Value {
    json!({
        "CreatedAt": v.meta.created,
        "Driver": "local",
        "Labels": v.meta.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": "local",
        // aac's own
        "Anonymous": v.meta.anonymous,
        "RefCount": users,
    })
}

fn row(v: &Volume, users: usize) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Scope": "local",
        "Mountpoint": v.mountpoint,
        "Labels": v.meta.labels.iter().map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(","),
        "Links": users.to_string(),
        "Size": "N/A",
    })
}

const HEADINGS: &[(&str, &str)] = &[
    ("Name", "VOLUME NAME"),
    ("Driver", "DRIVER"),
    ("Scope", "SCOPE"),
    ("Mountpoint", "MOUNTPOINT"),
    ("Labels", "LABELS"),
    ("Links", "LINKS"),
    ("Size", "SIZE"),
];

fn filter_matches(v: &Volume, users: usize, f: &[(String, String)]) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, x) in f {
        by_key.entry(k.as_str()).or_default().push(x.as_str());
    }
    by_key.iter().all(|(k, vals)| {
        vals.iter().any(|x| match *k {
            "name" => v.name.contains(x),
            "driver" => *x == "local",
            "dangling" => (users == 0) == matches!(*x, "true" | "1"),
            "label" => match x.split_once('=') {
                Some((lk, lv)) => v.meta.labels.get(lk).is_some_and(|y| y == lv),
                None => v.meta.labels.contains_key(*x),
            },
            _ => false,
        })
    })
}

fn parse_filters(args: &[String]) -> CliResult<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if ["name", "label", "dangling", "driver"].contains(&k) => {
                if k == "dangling" && !["true", "false", "1", "0"].contains(&v) {
                    return Err(CliError::aac(anyhow!(
                        "--filter {a:?}: dangling is true or false"
                    )));
                }
                Ok((k.to_string(), v.to_string()))
            }
            _ => Err(CliError::aac(anyhow!(
                "--filter {a:?}: expected name=, label=, dangling= or driver="
            ))),
        })
        .collect()
}

/// docker's question before a prune; no answer (no terminal, end of input) is no.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    if !std::io::stdin().is_terminal() {
        eprintln!();
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

pub fn run(ctx: &Ctx, cmd: VolumeCommand) -> CliResult<u8> {
    let engine = ctx.engine()?;
    match cmd {
        VolumeCommand::Create(a) => {
            if a.driver != "local" {
                return Err(CliError::aac(anyhow!(
                    "volume driver {:?} is not available: aac has the \"local\" driver only",
                    a.driver
                )));
            }
            if let Some(o) = a.opts.first() {
                return Err(CliError::aac(anyhow!(
                    "-o {o:?}: the local driver's mount options (type, device, o) are not supported; a volume is a folder in aac's state"
                )));
            }
            let v = engine.volume_create(a.name.as_deref(), labels_of(&a.labels)?)?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls(a) => {
            let format: Format = parse_arg(&a.format)?;
            let filters = parse_filters(&a.filter)?;
            let vols: Vec<(Volume, usize)> = engine
                .volume_list()?
                .into_iter()
                .filter(|(v, u)| filter_matches(v, *u, &filters))
                .collect();
            if a.quiet {
                for (v, _) in &vols {
                    println!("{}", v.name);
                }
                return Ok(0);
            }
            match format {
                Format::Json => {
                    let list: Vec<Value> = vols.iter().map(|(v, u)| shape(v, *u)).collect();
                    println!("{}", serde_json::to_string_pretty(&list).context("json")?);
                }
                Format::Template(t) => {
                    let rows: Vec<Value> = vols.iter().map(|(v, u)| row(v, *u)).collect();
                    print!("{}", t.render_all(&rows, HEADINGS)?);
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = vols
                        .iter()
                        .map(|(v, _)| vec!["local".to_string(), v.name.clone()])
                        .collect();
                    print!(
                        "{}",
                        aac_runtime::stats::format_table(&["DRIVER", "VOLUME NAME"], &rows)
                    );
                }
            }
        }
        VolumeCommand::Inspect(a) => {
            let format: Format = parse_arg(&a.format)?;
            let mut out = Vec::new();
            let mut failed = false;
            for n in &a.names {
                match engine.volume_inspect(n) {
                    Ok((v, users)) => out.push(shape(&v, users)),
                    Err(e) if a.names.len() > 1 => {
                        eprintln!("aac: {e}");
                        failed = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match format {
                Format::Template(t) => {
                    for v in &out {
                        println!("{}", t.render(v)?);
                    }
                }
                _ => println!("{}", serde_json::to_string_pretty(&out).context("json")?),
            }
            return Ok(u8::from(failed));
        }
        VolumeCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                match engine.volume_remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(aac_runtime::engine::EngineError::Volume(
                        aac_runtime::volumes::VolumeError::NotFound(_),
                    )) if a.force => {}
                    Err(e) => {
                        eprintln!("aac: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
        VolumeCommand::Prune(a) => {
            let what = if a.all {
                "This removes every volume no container uses."
            } else {
                "This removes the anonymous volumes no container uses."
            };
            if !a.force
                && !confirm(&format!(
                    "WARNING! {what}\nAre you sure you want to continue?"
                ))
            {
                return Ok(0);
            }
            let (removed, bytes) = engine.volume_prune(a.all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                aac_runtime::stats::human_decimal(bytes)
            );
        }
    }
    Ok(0)
}
