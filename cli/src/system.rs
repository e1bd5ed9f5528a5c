//! `aac system check` (what this host supports and what aac does about it) and
//! `aac system setup-rootless` (as root: a cgroup subtree and subuid/subgid ranges for a user).

use aac_runtime::host::{self, ContainerdInfo, HostReport, Level, SetupPaths};
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::context::Ctx;
use crate::exit::CliResult;
use crate::format::PlainFormat as Format;

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Report what this host supports (containerd, runc, cgroups, user namespaces, seccomp,
    /// CNI plugins, ...) and what aac does about each. Always exits 0.
    Check(CheckArgs),
    /// As root: prepare rootless use for a user where systemd does not delegate cgroups
    /// (a cgroup subtree aac-USER owned by the user, subuid/subgid ranges). Idempotent.
    SetupRootless(SetupArgs),
    /// Remove what failures left behind: names and folders without a container, network
    /// attachments, cgroups, and containerd containers, snapshots and leases with aac's
    /// labels that belong to no container.
    Prune(PruneArgs),
    /// Disk usage: images, containers' writable layers and volumes, and what is reclaimable.
    Df(DfArgs),
    /// What aac runs on: containers, images, containerd, cgroups, kernel (as `aac info`).
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Output format: table, json, or a Go template ('{{.Type}} {{.Size}}'; fields Type,
    /// TotalCount, Active, Size, Reclaimable).
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Output format: the text report, json, or a Go template ('{{.ServerVersion}}').
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
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
        SystemCommand::Prune(a) => prune(ctx, a).await,
        SystemCommand::Df(a) => df(ctx, a).await,
        SystemCommand::Info(a) => info(ctx, a).await,
    }
}

const DF_HEADINGS: &[(&str, &str)] = &[
    ("Type", "TYPE"),
    ("TotalCount", "TOTAL"),
    ("Active", "ACTIVE"),
    ("Size", "SIZE"),
    ("Reclaimable", "RECLAIMABLE"),
];

/// `system df` in docker's rows (sizes as docker writes them; `Reclaimable` with its share).
async fn df(ctx: &Ctx, args: DfArgs) -> CliResult<u8> {
    use crate::format::Format as F;
    use aac_runtime::stats::human_decimal;
    let format: F = crate::format::parse_arg(&args.format)?;
    let du = ctx.engine()?.disk_usage().await?;
    let share = |l: &aac_runtime::engine::UsageLine| {
        let r = human_decimal(l.reclaimable);
        match (l.reclaimable * 100).checked_div(l.size) {
            Some(pct) => format!("{r} ({pct}%)"),
            None => r,
        }
    };
    let none = aac_runtime::engine::UsageLine::default();
    let lines = [
        ("Images", &du.images),
        ("Containers", &du.containers),
        ("Local Volumes", &du.volumes),
        // aac builds no images: no build cache to hold
        ("Build Cache", &none),
    ];
    let rows: Vec<serde_json::Value> = lines
        .iter()
        .map(|(t, l)| {
            serde_json::json!({
                "Type": t,
                "TotalCount": l.total,
                "Active": l.active,
                "Size": human_decimal(l.size),
                "Reclaimable": share(l),
            })
        })
        .collect();
    match format {
        F::Json => println!(
            "{}",
            serde_json::to_string_pretty(&du).context("serializing")?
        ),
        F::Template(t) => print!("{}", t.render_all(&rows, DF_HEADINGS)?),
        F::Table => {
            let cells: Vec<Vec<String>> = lines
                .iter()
                .map(|(t, l)| {
                    vec![
                        t.to_string(),
                        l.total.to_string(),
                        l.active.to_string(),
                        human_decimal(l.size),
                        share(l),
                    ]
                })
                .collect();
            print!(
                "{}",
                aac_runtime::stats::format_table(
                    &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                    &cells
                )
            );
        }
    }
    Ok(0)
}

/// `aac info` / `system info`: docker's fields (Containers, ContainersRunning, Images,
/// ServerVersion, CgroupDriver, ...) with aac's beside them.
pub async fn info(ctx: &Ctx, args: InfoArgs) -> CliResult<u8> {
    use crate::format::Format as F;
    let format: F = crate::format::parse_arg(&args.format)?;
    let engine = ctx.engine()?;
    let target = ctx.containerd_target();
    let containerd = ContainerdInfo::probe(&target.address, &target.namespace).await;
    let report = HostReport::gather(containerd);
    let list = engine.list(true).await?;
    let paused = list.iter().filter(|c| engine.is_paused(c)).count();
    let running = list.iter().filter(|c| c.is_up()).count() - paused;
    let images = match engine.client().await {
        Ok(c) => c.list_images().await.map(|l| l.len()).unwrap_or(0),
        Err(_) => 0,
    };
    let cg = serde_json::to_value(&report.cgroup).unwrap_or_default();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let hostname = uname
        .as_ref()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let cgroup_version = match cg["mode"].as_str() {
        Some("unified") => "2",
        _ => "1",
    };
    let v = serde_json::json!({
        "Containers": list.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": list.len() - running - paused,
        "Images": images,
        "ServerVersion": report.containerd.version.clone().unwrap_or_default(),
        "Driver": "overlayfs",
        "CgroupDriver": cg["driver"]["driver"].as_str().unwrap_or(""),
        "CgroupVersion": cgroup_version,
        "DefaultRuntime": "runc",
        "KernelVersion": kernel,
        "OperatingSystem": os,
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "NCPU": aac_runtime::stats::online_cpus(),
        "MemTotal": mem_total,
        "Name": hostname,
        "DockerRootDir": engine.dirs().data,
        "SecurityOptions": if report.seccomp.supported { vec!["name=seccomp,profile=builtin"] } else { vec![] },
        // aac's own
        "ClientVersion": env!("CARGO_PKG_VERSION"),
        "ContainerdAddress": report.containerd.address,
        "ContainerdReachable": report.containerd.reachable,
        "Namespace": target.namespace,
        "RunDir": engine.dirs().run,
        "Backend": report.auto_backend.backend.to_string(),
    });
    match format {
        F::Json => println!(
            "{}",
            serde_json::to_string_pretty(&v).context("serializing")?
        ),
        F::Template(t) => println!("{}", t.render(&v)?),
        F::Table => {
            let s = |k: &str| match &v[k] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("Client:");
            println!(" Version:    {}", s("ClientVersion"));
            println!();
            println!("Server:");
            println!(" Containers: {}", s("Containers"));
            println!("  Running: {}", s("ContainersRunning"));
            println!("  Paused: {}", s("ContainersPaused"));
            println!("  Stopped: {}", s("ContainersStopped"));
            println!(" Images: {}", s("Images"));
            if report.containerd.reachable {
                println!(" Server Version: containerd {}", s("ServerVersion"));
            } else {
                println!(
                    " Server Version: containerd not reachable ({}); containers run on the process backend",
                    report.containerd.error.clone().unwrap_or_default()
                );
            }
            println!(" Storage Driver: {}", s("Driver"));
            println!(" Cgroup Driver: {}", s("CgroupDriver"));
            println!(" Cgroup Version: {}", s("CgroupVersion"));
            println!(" Default Runtime: {}", s("DefaultRuntime"));
            println!(" Security Options:");
            if report.seccomp.supported {
                println!("  seccomp");
                println!("   Profile: builtin");
            }
            println!(" Kernel Version: {}", s("KernelVersion"));
            println!(" Operating System: {}", s("OperatingSystem"));
            println!(" OSType: {}", s("OSType"));
            println!(" Architecture: {}", s("Architecture"));
            println!(" CPUs: {}", s("NCPU"));
            println!(
                " Total Memory: {}",
                aac_runtime::stats::human_binary(mem_total)
            );
            println!(" Name: {}", s("Name"));
            println!(" Docker Root Dir: {}", s("DockerRootDir"));
            println!(" Containerd Address: {}", s("ContainerdAddress"));
            println!(" Namespace: {}", s("Namespace"));
        }
    }
    Ok(0)
}

async fn prune(ctx: &Ctx, args: PruneArgs) -> CliResult<u8> {
    let report = ctx.engine()?.prune().await?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        ),
        Format::Table => {
            let lines = [
                ("abandoned container", &report.abandoned),
                ("stale name", &report.names),
                ("folder", &report.folders),
                ("network attachment", &report.networks),
                ("containerd container", &report.containers),
                ("snapshot", &report.snapshots),
                ("lease", &report.leases),
                ("temporary file", &report.temp_files),
            ];
            for (what, items) in lines {
                for i in items {
                    println!("removed {what} {i}");
                }
            }
            if report.is_empty() {
                println!("nothing to remove");
            }
        }
    }
    Ok(0)
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
