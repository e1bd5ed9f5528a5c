//! `aac images`, `aac image rm|import|ls`, `aac pull`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::SystemTime;

use aac_runtime::containerd::{Credentials, Progress};
use aac_runtime::image_config::ImageConfig;
use aac_runtime::status::human_duration;
use anyhow::{anyhow, Context as _};
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
    /// Give an image another name: `aac image tag SOURCE TARGET`.
    Tag(TagArgs),
    /// Show images as JSON in docker's shape (Id, RepoTags, RepoDigests, Config, RootFS, ...).
    Inspect(ImageInspectArgs),
    /// Write images to an archive (stdout, or -o FILE) that is both an OCI image layout and
    /// a `docker save` archive.
    Save(SaveArgs),
    /// Load images from an OCI layout or `docker save` archive (stdin, or -i FILE; gzip or
    /// not).
    Load(LoadArgs),
    /// Remove unused images: none is dangling (every aac image has a name); with -a, every
    /// image no container was created from.
    Prune(ImagePruneArgs),
}

#[derive(Args, Debug)]
pub struct ImageInspectArgs {
    /// Output format: json (default) or a Go template ('{{.Id}}', '{{json .Config}}').
    #[arg(short = 'f', long, default_value = "json")]
    pub format: String,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImagePruneArgs {
    /// Remove every image no container (running or not) was created from.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Registry user (default: $AAC_REGISTRY_USER).
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Registry password (default: $AAC_REGISTRY_PASSWORD). On the command line it is seen
    /// by `ps` and kept in shell history: prefer --password-stdin.
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the registry password from stdin (with --username), as `docker login` does.
    #[arg(long)]
    pub password_stdin: bool,
    /// Image reference: `busybox`, `127.0.0.1:5000/team/agent:1.0`, `name@sha256:...`.
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only print image names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template ('{{.Repository}}:{{.Tag}}').
    #[arg(long, default_value = "table")]
    pub format: String,
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

/// The largest password --password-stdin reads.
const PASSWORD_LIMIT: u64 = 64 * 1024;

/// A password from stdin, as `docker login --password-stdin`: the trailing newline (`\n` or
/// `\r\n`) dropped; empty, too long or not UTF-8 is an error.
fn password_from_stdin() -> CliResult<String> {
    use std::io::Read as _;
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .take(PASSWORD_LIMIT + 1)
        .read_to_end(&mut raw)
        .context("--password-stdin: reading stdin")?;
    if raw.len() as u64 > PASSWORD_LIMIT {
        return Err(CliError::aac(anyhow!(
            "--password-stdin: the password is longer than {PASSWORD_LIMIT} bytes"
        )));
    }
    let mut password = String::from_utf8(raw)
        .map_err(|_| CliError::aac(anyhow!("--password-stdin: the password is not UTF-8")))?;
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    if password.is_empty() {
        return Err(CliError::aac(anyhow!(
            "--password-stdin: stdin held no password"
        )));
    }
    Ok(password)
}

pub async fn pull(ctx: &Ctx, args: PullArgs) -> CliResult<u8> {
    let password = if args.password_stdin {
        if args.username.is_none() {
            return Err(CliError::aac(anyhow!("--password-stdin needs --username")));
        }
        Some(password_from_stdin()?)
    } else {
        if args.password.is_some() {
            eprintln!("aac: warning: a password on the command line is insecure (it is seen by `ps`); use --password-stdin");
        }
        args.password
    };
    let creds = match (args.username, password) {
        (Some(u), Some(p)) => Some(Credentials::new(u, p)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(CliError::aac(anyhow!(
                "--username and --password (or --password-stdin) go together"
            )))
        }
        (None, None) => Credentials::from_env(),
    };
    let client = ctx.client().await?;
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
    let format: Format = crate::format::parse_arg(&args.format)?;
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
    if let Format::Template(t) = &format {
        let rows: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let (repo, tag) = split_name(&i.name);
                serde_json::json!({
                    "ID": i.digest.strip_prefix("sha256:").unwrap_or(&i.digest).chars().take(12).collect::<String>(),
                    "Repository": repo,
                    "Tag": tag,
                    "Digest": i.digest,
                    "CreatedAt": i.created.map(aac_runtime::logs::format_time).unwrap_or_default(),
                    "CreatedSince": i.created
                        .and_then(|c| now.duration_since(c).ok())
                        .map(|d| format!("{} ago", human_duration(d)))
                        .unwrap_or_default(),
                    "Size": aac_runtime::stats::human_decimal(u64::try_from(i.size).unwrap_or(0)),
                    "Name": i.name,
                })
            })
            .collect();
        print!(
            "{}",
            t.render_all(
                &rows,
                &[
                    ("ID", "IMAGE ID"),
                    ("Repository", "REPOSITORY"),
                    ("Tag", "TAG"),
                    ("Digest", "DIGEST"),
                    ("CreatedAt", "CREATED AT"),
                    ("CreatedSince", "CREATED"),
                    ("Size", "SIZE"),
                    ("Name", "NAME"),
                ]
            )?
        );
        return Ok(0);
    }
    if format.is_json() {
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
            let (repo, tag) = split_name(&i.name);
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

/// `repo:tag` as two columns (a `:` inside a registry host's port is not a tag).
fn split_name(name: &str) -> (String, String) {
    match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (name.to_string(), String::new()),
    }
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

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

/// `aac image tag`: prints nothing, as docker.
pub async fn tag(ctx: &Ctx, args: TagArgs) -> CliResult<u8> {
    let client = ctx.engine()?.client().await?;
    client.tag_image(&args.source, &args.target).await?;
    Ok(0)
}

/// `repo` of `repo:tag` (`repo@digest` keeps its digest off).
fn repository(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    split_name(name).0
}

/// One image in docker's `image inspect` shape, aac's fields beside.
fn image_shape(i: &aac_runtime::engine::ImageInspect) -> serde_json::Value {
    let d = &i.details;
    let c = &d.config;
    let mut repo_digests: Vec<String> = i
        .names
        .iter()
        .map(|n| format!("{}@{}", repository(n), d.summary.digest))
        .collect();
    repo_digests.dedup();
    let str_of = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    serde_json::json!({
        "Id": d.config_digest,
        "RepoTags": i.names,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": str_of("comment"),
        "Created": str_of("created"),
        "Author": str_of("author"),
        "Config": c.get("config").cloned().unwrap_or_else(|| serde_json::json!({})),
        "Architecture": str_of("architecture"),
        "Variant": c.get("variant").cloned(),
        "Os": str_of("os"),
        "Size": d.layers_size(),
        "RootFS": {
            "Type": "layers",
            "Layers": c.pointer("/rootfs/diff_ids").cloned().unwrap_or_else(|| serde_json::json!([])),
        },
        "Metadata": {
            "LastTagTime": d.summary.created.map(aac_runtime::logs::format_time),
        },
        // aac's own
        "Digest": d.summary.digest,
        "MediaType": d.summary.media_type,
        "ManifestDigest": d.manifest_digest,
        "Containers": i.containers,
    })
}

/// `aac image inspect`: docker prints what it found and names what it did not (exit 1).
pub async fn inspect(ctx: &Ctx, args: ImageInspectArgs) -> CliResult<u8> {
    let format: Format = crate::format::parse_arg(&args.format)?;
    let engine = ctx.engine()?;
    let mut out = Vec::new();
    let mut failed = false;
    for r in &args.images {
        match engine.image_inspect(r).await {
            Ok(i) => out.push(image_shape(&i)),
            Err(e) if args.images.len() > 1 => {
                eprintln!("aac: {r}: {e}");
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    match &format {
        Format::Template(t) => {
            let mut text = String::new();
            for v in &out {
                text.push_str(&t.render(v)?);
                text.push('\n');
            }
            print!("{text}");
        }
        _ => println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(anyhow::Error::from)?
        ),
    }
    Ok(u8::from(failed))
}

/// docker's prompt: anything but y/yes (an empty or closed stdin too) cancels.
pub(crate) fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `aac image prune [-a] [-f]`, docker's report.
pub async fn prune(ctx: &Ctx, args: ImagePruneArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    if !args.force {
        let q = if args.all {
            "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?"
        } else {
            "WARNING! This will remove all dangling images.\nAre you sure you want to continue?"
        };
        if !confirm(q) {
            return Ok(0);
        }
    }
    let report = engine.image_prune(args.all).await?;
    if !report.untagged.is_empty() || !report.deleted.is_empty() {
        println!("Deleted Images:");
        for n in &report.untagged {
            println!("untagged: {n}");
        }
        for d in &report.deleted {
            println!("deleted: {d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        aac_runtime::stats::human_decimal(report.reclaimed)
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry user.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Registry password (prefer --password-stdin: a flag is visible to other users).
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin", conflicts_with = "password")]
    pub password_stdin: bool,
    /// Registry host[:port]; Docker Hub when left out.
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port]; Docker Hub when left out.
    pub server: Option<String>,
}

/// One line from the terminal, not echoed (a password prompt).
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The registry `login`/`logout` name: the server given, else Docker Hub.
fn login_server(server: &Option<String>) -> String {
    server.clone().unwrap_or_else(|| "docker.io".to_string())
}

/// `aac login`: checks the credentials with the registry, then keeps them (docker's
/// config.json, 0600) for `pull`. A refusal exits 1, as docker's does.
pub async fn login(args: LoginArgs) -> CliResult<u8> {
    use aac_runtime::containerd::auth;
    use std::io::{BufRead, Read};
    let server = login_server(&args.server);
    let key = auth::registry_key(&server).map_err(|e| CliError::aac(e.into()))?;
    let tty = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if tty && !args.password_stdin => {
            eprint!("Username: ");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(anyhow::Error::from)?;
            line.trim().to_string()
        }
        None => {
            return Err(CliError::aac(anyhow!(
            "login needs a user: give --username (and --password-stdin), or run it on a terminal"
        )))
        }
    };
    if username.is_empty() || username.contains(':') {
        return Err(CliError::aac(anyhow!(
            "{username:?} is not a user name (not empty, no ':')"
        )));
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .take(64 << 10)
            .read_to_string(&mut s)
            .map_err(anyhow::Error::from)?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if tty {
        read_hidden("Password: ")?
    } else {
        return Err(CliError::aac(anyhow!(
            "login needs a password: --password-stdin, or run it on a terminal"
        )));
    };
    if password.is_empty() {
        return Err(CliError::aac(anyhow!("the password is empty")));
    }
    let creds = Credentials::new(username, password);
    // Docker Hub's key is a URL; the registry to ask is docker.io.
    let host = if key == auth::DOCKER_HUB_KEY {
        "docker.io".to_string()
    } else {
        key.clone()
    };
    if let Err(e) = aac_runtime::containerd::check_login(&host, &creds).await {
        return Err(CliError {
            code: 1,
            error: anyhow!("login to {host}: {e}"),
        });
    }
    auth::save(&key, &creds).map_err(|e| CliError::aac(e.into()))?;
    println!("Login Succeeded");
    Ok(0)
}

/// `aac logout`: forgets what `login` kept for the registry.
pub async fn logout(args: LogoutArgs) -> CliResult<u8> {
    use aac_runtime::containerd::auth;
    let server = login_server(&args.server);
    let key = auth::registry_key(&server).map_err(|e| CliError::aac(e.into()))?;
    if auth::remove(&key).map_err(|e| CliError::aac(e.into()))? {
        println!("Removing login credentials for {key}");
    } else {
        println!("Not logged in to {key}");
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `aac image save` / `aac save`.
pub async fn save(ctx: &Ctx, args: SaveArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let out: Box<dyn std::io::Write + Send> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| CliError::aac(anyhow!("-o {}: {e}", p.display())))?,
        )),
        None if std::io::stdout().is_terminal() => {
            return Err(CliError::aac(anyhow!(
            "cowardly refusing to write an archive to a terminal: use -o FILE or redirect stdout"
        )))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let r = client.save_images(&args.images, out).await;
    if r.is_err() {
        if let Some(p) = &args.output {
            let _ = std::fs::remove_file(p);
        }
    }
    r?;
    Ok(0)
}

/// `aac image load` / `aac load`: docker's `Loaded image: NAME` lines.
pub async fn load(ctx: &Ctx, args: LoadArgs) -> CliResult<u8> {
    let client = ctx.client().await?;
    let images = match &args.input {
        Some(p) => client.import_archive_with_progress(p, &|_| {}).await?,
        None if std::io::stdin().is_terminal() => {
            return Err(CliError::aac(anyhow!(
                "requested load from stdin, but stdin is a terminal: use -i FILE or redirect stdin"
            )))
        }
        None => {
            client
                .import_archive_stream(Box::new(std::io::stdin()), &|_| {})
                .await?
        }
    };
    if !args.quiet {
        for i in images {
            println!("Loaded image: {}", i.name);
        }
    }
    Ok(0)
}
