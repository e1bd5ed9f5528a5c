//! `aac images`, `aac image rm|import|ls`, `aac pull`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

use aac_runtime::containerd::{Credentials, Progress};
use aac_runtime::image_config::ImageConfig;
use aac_runtime::status::human_duration;
use anyhow::anyhow;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::containers::Format;
use crate::context::Ctx;
use crate::exit::{CliError, CliResult};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove images.
    #[command(alias = "remove")]
    Rm(ImageRmArgs),
    /// Import an OCI layout or `docker save` archive (gzip or not), or a folder with --rootfs.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Registry user (default: $AAC_REGISTRY_USER).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Registry password (default: $AAC_REGISTRY_PASSWORD).
    #[arg(long, short = 'p')]
    pub password: Option<String>,
    /// Image reference: `busybox`, `127.0.0.1:5000/team/agent:1.0`, `name@sha256:...`.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only print image names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ImageRmArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Treat SOURCE as a root file system folder and make it a one-layer image NAME:TAG.
    #[arg(long)]
    pub rootfs: bool,
    /// With --rootfs: the image's command (repeat for each argument).
    #[arg(long = "cmd")]
    pub cmd: Vec<String>,
    /// With --rootfs: environment of the image (KEY=VALUE).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Archive file, or a folder with --rootfs.
    pub source: PathBuf,
    /// With --rootfs: the name to give the image.
    pub name: Option<String>,
}

/// A spinner on a terminal; nothing when output is piped.
fn progress() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(pb)
}

fn describe(p: &Progress) -> String {
    match p {
        Progress::Packing => "packing the root file system".into(),
        Progress::Writing { digest, size } => format!(
            "writing {} ({})",
            digest.chars().take(19).collect::<String>(),
            aac_runtime::stats::human_binary(u64::try_from(*size).unwrap_or(0))
        ),
        Progress::Unpacking { layer, of } => format!("unpacking layer {layer}/{of}"),
        Progress::Done { name } => format!("{name} ready"),
    }
}

pub async fn import(ctx: &Ctx, args: ImportArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let pb = progress();
    let report = |p: Progress| {
        if let Some(pb) = &pb {
            pb.set_message(describe(&p));
        }
    };
    let names = if args.rootfs {
        let name = args
            .name
            .clone()
            .ok_or_else(|| CliError::aac(anyhow!("--rootfs needs a NAME:TAG after the folder")))?;
        if !args.source.is_dir() {
            return Err(CliError::aac(anyhow!(
                "{}: not a folder",
                args.source.display()
            )));
        }
        let config = ImageConfig {
            cmd: args.cmd.clone(),
            env: args.env.clone(),
            ..ImageConfig::default()
        };
        vec![
            client
                .import_rootfs_with_progress(&args.source, &name, config, &report)
                .await?
                .name,
        ]
    } else {
        if args.name.is_some() {
            return Err(CliError::aac(anyhow!(
                "a name is only taken with --rootfs; archives carry their own names"
            )));
        }
        client
            .import_archive_with_progress(&args.source, &report)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    for n in names {
        println!("{n}");
    }
    Ok(0)
}

pub async fn pull(ctx: &Ctx, args: PullArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let creds = match (args.username, args.password) {
        (Some(u), Some(p)) => Some(Credentials::new(u, p)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(CliError::aac(anyhow!(
                "--username and --password go together"
            )))
        }
        (None, None) => Credentials::from_env(),
    };
    let pb = progress();
    let report = |p: Progress| {
        if let Some(pb) = &pb {
            pb.set_message(describe(&p));
        }
    };
    let image = client
        .pull(&args.reference, creds.as_ref(), &report)
        .await?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    println!("{}", image.name);
    Ok(0)
}

pub async fn list(ctx: &Ctx, args: ImagesArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let mut images = client.list_images().await?;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        for i in &images {
            println!("{}", i.name);
        }
        return Ok(0);
    }
    let now = SystemTime::now();
    if args.format == Format::Json {
        let v: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                serde_json::json!({
                    "Name": i.name,
                    "Digest": i.digest,
                    "MediaType": i.media_type,
                    "Created": i.created.map(aac_runtime::logs::format_time),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let (repo, tag) = match i.name.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (i.name.clone(), String::new()),
            };
            vec![
                repo,
                tag,
                i.digest.chars().take(19).collect(),
                i.created
                    .and_then(|c| now.duration_since(c).ok())
                    .map(|d| format!("{} ago", human_duration(d)))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        aac_runtime::stats::format_table(&["REPOSITORY", "TAG", "DIGEST", "CREATED"], &rows)
    );
    Ok(0)
}

pub async fn remove(ctx: &Ctx, args: ImageRmArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let mut failed = false;
    for i in &args.images {
        match client.remove_image(i).await {
            Ok(()) => println!("Untagged: {i}"),
            Err(e) => {
                eprintln!("aac: {i}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}
