//! `aac system check` (what this host supports and what aac does about it) and
//! `aac system setup-rootless` (as root: a cgroup subtree and subuid/subgid ranges for a user).

use aac_runtime::host::{self, ContainerdInfo, HostReport, Level, SetupPaths};
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::containers::Format;
use crate::context::Ctx;
use crate::exit::CliResult;

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Report what this host supports (containerd, runc, cgroups, user namespaces, seccomp,
    /// CNI plugins, ...) and what aac does about each. Always exits 0.
    Check(CheckArgs),
    /// As root: prepare rootless use for a user where systemd does not delegate cgroups
    /// (a cgroup subtree aac-USER owned by the user, subuid/subgid ranges). Idempotent.
    SetupRootless(SetupArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The user to prepare.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub async fn run(ctx: &Ctx, command: SystemCommand) -> CliResult<u8> {
    match command {
        SystemCommand::Check(a) => check(ctx, a).await,
        SystemCommand::SetupRootless(a) => setup_rootless(a),
    }
}

async fn check(ctx: &Ctx, args: CheckArgs) -> CliResult<u8> {
    let target = ctx.containerd_target();
    let containerd = ContainerdInfo::probe(&target.address, &target.namespace).await;
    let report = HostReport::gather(containerd);
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        ),
        Format::Table => print_table(&report),
    }
    Ok(0)
}

fn print_table(report: &HostReport) {
    let rows: Vec<[String; 4]> = report
        .items
        .iter()
        .map(|i| {
            let level = match i.level {
                Level::Ok => "ok",
                Level::Warn => "warn",
                Level::Missing => "missing",
            };
            [
                i.item.clone(),
                level.to_string(),
                i.state.clone(),
                i.action.clone(),
            ]
        })
        .collect();
    let header = [
        "ITEM".to_string(),
        "".to_string(),
        "STATE".to_string(),
        "AAC DOES".to_string(),
    ];
    let w0 = rows
        .iter()
        .chain(std::iter::once(&header))
        .map(|r| r[0].len())
        .max()
        .unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    let w2 = rows
        .iter()
        .chain(std::iter::once(&header))
        .map(|r| r[2].len())
        .max()
        .unwrap_or(0)
        .min(70);
    for r in std::iter::once(&header).chain(rows.iter()) {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w0,
            w1 = w1,
            w2 = w2
        );
    }
}

fn setup_rootless(args: SetupArgs) -> CliResult<u8> {
    let report = host::setup_rootless(&args.user, &SetupPaths::default())?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        ),
        Format::Table => {
            if report.changes.is_empty() {
                println!(
                    "nothing to do: {} (uid {}) is already set up",
                    report.user, report.uid
                );
            }
            for c in &report.changes {
                println!("{c}");
            }
            for n in &report.notes {
                println!("note: {n}");
            }
        }
    }
    Ok(0)
}
