//! `aac secret create|ls|inspect|rm|update`. Values come from files, from stdin or from host
//! environment variables, never from the command line (they would be in `ps` and in shell
//! history); nothing here prints a value.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use aac_runtime::secrets::{SecretMeta, SecretValue, WriteMode};
use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};

use crate::context::Ctx;
use crate::exit::CliResult;

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret (one or more keys) from files, stdin or host environment variables.
    Create(WriteArgs),
    /// Write a new version of a secret: the keys given change, the others stay (--replace:
    /// only the keys given). Running agents see new files at once; those taking it as an
    /// environment variable are listed as needing a restart.
    Update(UpdateArgs),
    /// List secrets (names, versions, keys; never values).
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show secrets as JSON: metadata, key names, sizes and SHA-256 digests, never values.
    Inspect(NamesArgs),
    /// Remove secrets (refused while a container uses one, unless --force).
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct WriteArgs {
    /// Secret name (letters, digits, '.', '_', '-').
    pub name: String,
    /// `-`: one key, `value`, read from stdin (like `docker secret create NAME -`).
    #[arg(value_name = "-")]
    pub stdin: Option<String>,
    /// Key from a file: `KEY=PATH`, or `PATH` (the key is the file's name); `KEY=-` reads stdin.
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// Key from a host environment variable: `KEY=VAR`, or `VAR` (the key is its name).
    #[arg(long = "from-env", value_name = "[KEY=]VAR")]
    pub from_env: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub write: WriteArgs,
    /// The new version has only the keys given.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template ('{{.Name}} {{.Version}}'; fields Name,
    /// Version, CreatedAt, UpdatedAt, Keys, Driver).
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// `table` headings of `secret ls --format`.
const LS_HEADINGS: &[(&str, &str)] = &[
    ("Name", "NAME"),
    ("Version", "VERSION"),
    ("CreatedAt", "CREATED"),
    ("UpdatedAt", "UPDATED"),
    ("Keys", "KEYS"),
    ("Driver", "DRIVER"),
];

/// One `secret ls` row for templates: names only, never a value.
fn ls_row(m: &SecretMeta) -> serde_json::Value {
    serde_json::json!({
        "Name": m.name,
        "Version": m.version,
        "CreatedAt": m.created,
        "UpdatedAt": m.updated,
        "Keys": keys_of(m),
        "Driver": "aac",
    })
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove even while containers use it (running ones keep their files until removed).
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// The keys the flags name, read.
fn read_values(args: &WriteArgs) -> anyhow::Result<BTreeMap<String, SecretValue>> {
    let mut out = BTreeMap::new();
    let mut stdin_used = false;
    let mut read_stdin = |what: &str| -> anyhow::Result<Vec<u8>> {
        if stdin_used {
            bail!("{what}: stdin can give only one key");
        }
        stdin_used = true;
        let mut buf = Vec::new();
        std::io::stdin()
            .take(aac_runtime::secrets::store::MAX_SECRET_BYTES as u64 + 1)
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        Ok(buf)
    };
    let mut add = |key: String, value: Vec<u8>| -> anyhow::Result<()> {
        if out.insert(key.clone(), SecretValue::new(value)).is_some() {
            bail!("key {key:?} is given twice");
        }
        Ok(())
    };
    match args.stdin.as_deref() {
        None => {}
        Some("-") => add("value".into(), read_stdin("-")?)?,
        Some(other) => bail!(
            "unexpected argument {other:?}: values are never given on the command line; use \
             --from-file, --from-env or - (stdin)"
        ),
    }
    for f in &args.from_file {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => {
                let key = PathBuf::from(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| anyhow!("--from-file {f}: no file name to take as the key"))?;
                (key, f.clone())
            }
        };
        let value = if path == "-" {
            read_stdin(&format!("--from-file {key}=-"))?
        } else {
            let meta = std::fs::metadata(&path).with_context(|| format!("--from-file {path}"))?;
            if meta.len() > aac_runtime::secrets::store::MAX_SECRET_BYTES as u64 {
                bail!(
                    "--from-file {path}: {} bytes, larger than the limit of {} bytes for a secret",
                    meta.len(),
                    aac_runtime::secrets::store::MAX_SECRET_BYTES
                );
            }
            std::fs::read(&path).with_context(|| format!("--from-file {path}"))?
        };
        add(key, value)?;
    }
    for e in &args.from_env {
        let (key, var) = e.split_once('=').unwrap_or((e.as_str(), e.as_str()));
        let value = std::env::var_os(var)
            .ok_or_else(|| anyhow!("--from-env {e}: the host has no environment variable {var}"))?;
        add(key.to_string(), value.into_encoded_bytes())?;
    }
    if out.is_empty() {
        bail!(
            "secret {}: no keys given: use --from-file KEY=PATH, --from-env KEY=VAR or - (stdin)",
            args.name
        );
    }
    Ok(out)
}

fn keys_of(m: &SecretMeta) -> String {
    m.keys.keys().cloned().collect::<Vec<_>>().join(",")
}

pub async fn run(ctx: &Ctx, cmd: SecretCommand) -> CliResult<u8> {
    let engine = ctx.engine()?;
    match cmd {
        SecretCommand::Create(a) => {
            let values = read_values(&a)?;
            let meta = engine.secrets().write(&a.name, values, WriteMode::Create)?;
            println!("{}", meta.name);
        }
        SecretCommand::Update(a) => {
            let values = read_values(&a.write)?;
            let mode = if a.replace {
                WriteMode::Replace
            } else {
                WriteMode::Merge
            };
            let u = engine.update_secret(&a.write.name, values, mode).await?;
            println!("{} version {}", u.meta.name, u.meta.version);
            if !u.refreshed.is_empty() {
                println!("updated /run/secrets in: {}", u.refreshed.join(", "));
            }
            if !u.needs_restart.is_empty() {
                println!(
                    "needs a restart to see the new value in its environment: {}",
                    u.needs_restart.join(", ")
                );
            }
            for (c, why) in &u.failed {
                eprintln!("aac: warning: updating the secrets of {c}: {why}");
            }
        }
        SecretCommand::Ls(a) => {
            let format: crate::format::Format = crate::format::parse_arg(&a.format)?;
            let list = engine.secrets().list()?;
            if a.quiet {
                for m in &list {
                    println!("{}", m.name);
                }
            } else if format.is_json() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).context("serializing")?
                );
            } else if let crate::format::Format::Template(t) = &format {
                let rows: Vec<serde_json::Value> = list.iter().map(ls_row).collect();
                print!("{}", t.render_all(&rows, LS_HEADINGS)?);
            } else {
                println!("{:<30} {:<8} {:<22} KEYS", "NAME", "VERSION", "UPDATED");
                for m in &list {
                    println!(
                        "{:<30} {:<8} {:<22} {}",
                        m.name,
                        m.version,
                        m.updated,
                        keys_of(m)
                    );
                }
            }
        }
        SecretCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = None;
            for n in &a.names {
                match engine.secrets().inspect(n) {
                    Ok(m) => {
                        let users: Vec<serde_json::Value> = engine
                            .secret_users(n)?
                            .into_iter()
                            .map(|u| {
                                serde_json::json!({
                                    "container": u.container.rec.name,
                                    "env": u.env,
                                    "file": u.file,
                                })
                            })
                            .collect();
                        let mut v = serde_json::to_value(&m).context("serializing")?;
                        v["usedBy"] = serde_json::Value::Array(users);
                        out.push(v);
                    }
                    Err(e) => {
                        eprintln!("aac: {e}");
                        failed = Some(e);
                    }
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&out).context("serializing")?
            );
            if failed.is_some() {
                return Ok(crate::exit::EXIT_AAC);
            }
        }
        SecretCommand::Rm(a) => {
            let mut code = 0;
            for n in &a.names {
                match engine.remove_secret(n, a.force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("aac: {e}");
                        code = crate::exit::EXIT_AAC;
                    }
                }
            }
            return Ok(code);
        }
    }
    Ok(0)
}
