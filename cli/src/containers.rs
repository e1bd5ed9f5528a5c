//! Commands on existing containers: ps, stop, kill, rm, inspect, wait, logs, exec. Each
//! parses its arguments, calls the engine and prints.

use std::io::Write;
use std::time::{Duration, SystemTime};

use aac_runtime::backend::ExecRequest;
use aac_runtime::engine::{self, Container, Engine};
use aac_runtime::logs::{self, LogFilter, Stream};
use anyhow::{anyhow, Context as _};
use clap::Args;

use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::shape;

pub use crate::format::Format;

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print container IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template ('{{.Names}}', 'table {{.ID}}\t{{.Status}}').
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: name=, id=, status=, label=KEY[=VALUE], ancestor=, health=, exited=, network=
    /// (repeat for more; the same key twice matches either).
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Show the size of each container's writable layer.
    #[arg(short = 's', long)]
    pub size: bool,
    /// Show only the latest container (any state).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show the N latest containers (any state).
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    /// Signal to stop with (name like SIGINT/INT or number), SIGKILL after the grace period.
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send (name like SIGTERM/TERM or number).
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Also remove its anonymous volumes.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Wait for: not-running (the first exit, even when a restart policy restarts it),
    /// next-exit, removed.
    #[arg(long, default_value = "not-running")]
    pub condition: String,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep following new output until the container stops.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(long, short = 'n', default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Only lines since this time (10m, 2026-11-25T10:00:00Z, UNIX seconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines until this time (with -f: follow until then).
    #[arg(long)]
    pub until: Option<String>,
    /// Show the extra details of each line: the labels and environment variables named by
    /// `--log-opt labels=... / env=...`, as `k=v,k2=v2 ` before it.
    #[arg(long)]
    pub details: bool,
    pub name: String,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variables: KEY=VALUE, or KEY to copy it from this environment (dropped
    /// when unset here).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Run as UID[:GID] inside the container.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Run in the background: print nothing, return at once.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// The container, then the command and its arguments: every word after CONTAINER belongs
    /// to the command, even one that looks like an aac flag, as with docker.
    #[arg(required = true, value_name = "CONTAINER COMMAND [ARG...]")]
    pub argv: Vec<String>,
}

impl ExecArgs {
    /// The container's name or ID.
    pub fn name(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// The command and its arguments.
    pub fn command(&self) -> &[String] {
        self.argv.get(1..).unwrap_or_default()
    }
}

/// Apply `op` to each named container, docker's way: print each name done, or its error;
/// exit 1 when any failed.
async fn each<'a, F, Fut>(engine: &'a Engine, names: &'a [String], op: F) -> CliResult<u8>
where
    F: Fn(&'a Engine, Container) -> Fut,
    Fut: std::future::Future<Output = Result<(), engine::EngineError>> + 'a,
{
    let mut all_ok = true;
    for n in names {
        let r = match engine.load(n) {
            Ok(c) => op(engine, c).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("aac: {n}: {e}");
                all_ok = false;
            }
        }
    }
    Ok(u8::from(!all_ok))
}

pub async fn stop(ctx: &Ctx, args: StopArgs) -> CliResult<u8> {
    let grace = Duration::from_secs(args.time);
    let sig = engine::parse_signal(&args.signal)?;
    each(ctx.engine()?, &args.names, |e, c| async move {
        e.stop(&c, grace, sig).await
    })
    .await
}

pub async fn kill(ctx: &Ctx, args: KillArgs) -> CliResult<u8> {
    let sig = engine::parse_signal(&args.signal)?;
    each(ctx.engine()?, &args.names, |e, c| async move {
        e.kill(&c, sig).await
    })
    .await
}

pub async fn rm(ctx: &Ctx, args: RmArgs) -> CliResult<u8> {
    let (force, volumes) = (args.force, args.volumes);
    let engine = ctx.engine()?;
    // A scaled agent's name stands for all of it (`aac rm -f web` = `aac down web`).
    let (groups, names): (Vec<String>, Vec<String>) = args
        .names
        .iter()
        .cloned()
        .partition(|n| engine.is_agent_group(n));
    let mut failed = false;
    for g in &groups {
        if !force {
            eprintln!("aac: {g}: agent {g} is running: use `aac rm -f {g}` or `aac down {g}`");
            failed = true;
            continue;
        }
        match engine.down(g).await {
            Ok(()) => println!("{g}"),
            Err(e) => {
                eprintln!("aac: {g}: {e}");
                failed = true;
            }
        }
    }
    if names.is_empty() {
        return Ok(u8::from(failed));
    }
    let code = each(engine, &names, |e, c| async move {
        e.remove_with_volumes(&c, force, volumes).await
    })
    .await?;
    Ok(code.max(u8::from(failed)))
}

pub async fn ps(ctx: &Ctx, args: PsArgs) -> CliResult<u8> {
    let now = SystemTime::now();
    let filters = crate::filters::PsFilters::parse(&args.filter)?;
    let format: Format = crate::format::parse_arg(&args.format)?;
    let engine = ctx.engine()?;
    // What a fault left behind goes first (names, folders, abandoned runs).
    if let Err(e) = engine.collect_local() {
        tracing::warn!("collecting leftovers: {e}");
    }
    let all = args.all || args.latest || args.last.is_some() || filters.implies_all();
    let mut entries = engine.list(all).await?;
    entries.retain(|c| filters.matches(engine, c));
    if let Some(n) = args.last.or(args.latest.then_some(1)) {
        entries.truncate(n);
    }
    // Replicas of a scaled agent are listed together, under the agent's name.
    let mut agent_of = std::collections::HashMap::new();
    for g in engine.list_agents().await? {
        for r in &g.status.replicas {
            agent_of.insert(r.id.clone(), g.record.name.clone());
        }
    }
    let agent = |c: &Container| agent_of.get(&c.rec.id).cloned().unwrap_or_default();
    if !agent_of.is_empty() {
        entries.sort_by_key(|c| {
            let a = agent(c);
            (a.is_empty(), a, c.rec.name.clone())
        });
    }
    if args.quiet {
        for e in &entries {
            println!("{}", short(&e.rec.id, args.no_trunc));
        }
        return Ok(0);
    }
    let mut sizes: Vec<Option<String>> = Vec::new();
    for c in &entries {
        sizes.push(if args.size {
            Some(match engine.container_size(c).await {
                Ok(s) => format!(
                    "{} (virtual {})",
                    aac_runtime::stats::human_decimal(s.rw),
                    aac_runtime::stats::human_decimal(s.rw + s.image)
                ),
                Err(e) => {
                    tracing::debug!("{}: size: {e}", c.rec.name);
                    "-".into()
                }
            })
        } else {
            None
        });
    }
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .zip(&sizes)
        .map(|(c, s)| {
            let mut row = shape::ps_row(engine, c, now, args.no_trunc, s.as_deref());
            row["Agent"] = agent(c).into();
            row
        })
        .collect();
    match &format {
        Format::Json => {
            let list: Vec<serde_json::Value> = entries
                .iter()
                .zip(rows)
                .map(|(e, mut row)| {
                    row["ID"] = e.rec.id.clone().into();
                    row["Command"] = e.rec.command.join(" ").into();
                    row["State"] = serde_json::to_value(e.status.phase).unwrap_or_default();
                    if !args.size {
                        if let Some(m) = row.as_object_mut() {
                            m.remove("Size");
                        }
                    }
                    row
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).context("json")?);
        }
        Format::Template(t) => print!("{}", t.render_all(&rows, shape::PS_HEADINGS)?),
        Format::Table => {
            let mut head = vec![
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
                "BACKEND",
            ];
            if args.size {
                head.push("SIZE");
            }
            if !agent_of.is_empty() {
                head.push("AGENT");
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    head.iter()
                        .map(|h| {
                            let key = shape::PS_HEADINGS
                                .iter()
                                .find(|(_, t)| t == h)
                                .map(|(k, _)| *k)
                                .unwrap_or("");
                            r[key].as_str().unwrap_or("").to_string()
                        })
                        .collect()
                })
                .collect();
            print!("{}", aac_runtime::stats::format_table(&head, &cells));
        }
    }
    Ok(0)
}

fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Output format: json (default) or a Go template ('{{.State.Status}}', '{{json .Config}}').
    #[arg(short = 'f', long, default_value = "json")]
    pub format: String,
    /// Also show the size of the writable layer (SizeRw, SizeRootFs).
    #[arg(short = 's', long)]
    pub size: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub async fn inspect(ctx: &Ctx, args: InspectArgs) -> CliResult<u8> {
    let format: Format = crate::format::parse_arg(&args.format)?;
    let engine = ctx.engine()?;
    let mut out = Vec::new();
    let mut failed = false;
    for n in &args.names {
        if engine.is_agent_group(n) {
            out.push(crate::scale::group_json(&engine.agent_group(n).await?));
            continue;
        }
        match engine.inspect(n).await {
            Ok(c) => {
                let mut v = shape::inspect(engine, &c);
                if args.size {
                    if let Ok(s) = engine.container_size(&c).await {
                        v["SizeRw"] = s.rw.into();
                        v["SizeRootFs"] = (s.rw + s.image).into();
                    }
                }
                out.push(v)
            }
            // docker prints what it found and names what it did not, exit 1
            Err(e) if args.names.len() > 1 => {
                eprintln!("aac: {n}: {e}");
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
        _ => println!("{}", serde_json::to_string_pretty(&out).context("json")?),
    }
    Ok(u8::from(failed))
}

pub async fn wait(ctx: &Ctx, args: WaitArgs) -> CliResult<u8> {
    let cond: engine::WaitCondition = args
        .condition
        .parse()
        .map_err(|e: String| CliError::aac(anyhow!("--condition: {e}")))?;
    let engine = ctx.engine()?;
    for n in &args.names {
        let c = engine.load(n)?;
        println!("{}", engine.wait_until(&c, cond).await?);
    }
    Ok(0)
}

/// docker's `url.QueryEscape`: what `logs --details` does to attribute keys and values.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `k=v,k2=v2` attributes `logs --details` puts before each line: the labels and
/// environment variables `--log-opt labels=/env=` name that the container has, by key.
fn detail_attrs(rec: &aac_runtime::record::ContainerRecord) -> String {
    let logging = &rec.agent.spec.logging;
    let mut attrs: Vec<(String, String)> = Vec::new();
    for l in &logging.labels {
        if let Some(v) = rec.agent.metadata.labels.get(l) {
            attrs.push((l.clone(), v.clone()));
        }
    }
    let env: Vec<String> = rec
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    for name in &logging.env {
        if let Some(v) = env
            .iter()
            .find_map(|kv| kv.strip_prefix(name.as_str())?.strip_prefix('='))
        {
            attrs.push((name.clone(), v.to_string()));
        }
    }
    attrs.sort();
    attrs.dedup_by(|a, b| a.0 == b.0);
    attrs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_entry(e: &logs::Entry, timestamps: bool, details: Option<&str>) {
    let mut line = String::new();
    if timestamps {
        line.push_str(&e.time);
        line.push(' ');
    }
    if let Some(d) = details {
        line.push_str(d);
        line.push(' ');
    }
    line.push_str(&e.log);
    let _ = match e.stream {
        Stream::Stdout => std::io::stdout().write_all(line.as_bytes()),
        Stream::Stderr => std::io::stderr().write_all(line.as_bytes()),
    };
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let e = engine.inspect(&args.name).await?;
    if e.status.log_dropped_lines > 0 {
        eprintln!(
            "aac: warning: {} log lines of {} were dropped because its log could not be written (disk full?)",
            e.status.log_dropped_lines, e.rec.name
        );
    }
    let now = SystemTime::now();
    let parse = |s: &Option<String>, flag: &str| -> CliResult<Option<SystemTime>> {
        s.as_deref()
            .map(|v| {
                logs::parse_time_arg(v, now).map_err(|m| CliError::aac(anyhow!("{flag}: {m}")))
            })
            .transpose()
    };
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| CliError::aac(anyhow!("--tail: {n:?} is not a number")))?,
        ),
    };
    let filter = LogFilter {
        since: parse(&args.since, "--since")?,
        until: parse(&args.until, "--until")?,
        tail,
    };
    let until = filter.until;
    let attrs = args.details.then(|| detail_attrs(&e.rec));
    let details = attrs.as_deref();
    if !args.follow {
        for entry in engine.logs(&e, &filter) {
            print_entry(&entry, args.timestamps, details);
        }
        let _ = std::io::stdout().flush();
        return Ok(0);
    }
    // The follower's first poll hands out the stored entries (tail applied), the next ones
    // what came after: nothing is lost or shown twice in between.
    let mut follower = engine.follow_logs(&e, filter);
    let f = &mut follower;
    loop {
        // With --until, following ends once that time has passed (docker's rule).
        let past_until = until.is_some_and(|u| SystemTime::now() > u);
        for entry in f.poll() {
            print_entry(&entry, args.timestamps, details);
        }
        let _ = std::io::stdout().flush();
        if past_until {
            return Ok(0);
        }
        if !engine.still_writing(&e).await {
            for entry in f.poll() {
                print_entry(&entry, args.timestamps, details);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn exec(ctx: &Ctx, args: ExecArgs) -> CliResult<u8> {
    if args.command().is_empty() {
        return Err(CliError::aac(anyhow::anyhow!(
            "exec needs a command after the container: aac exec CONTAINER COMMAND [ARG...]"
        )));
    }
    let engine = ctx.engine()?;
    let c = engine.load(args.name())?;
    let user = args
        .user
        .as_deref()
        .map(crate::flags::parse_user)
        .transpose()
        .map_err(|e| CliError::aac(anyhow!("--user {e}")))?;
    // docker's `-e KEY`: the value from here; unset here, not set there either.
    let env: Vec<String> = args
        .env
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect();
    if let Some(bad) = env.iter().find(|e| e.starts_with('=')) {
        return Err(CliError::aac(anyhow!("-e {bad:?}: the name is empty")));
    }
    if args.detach {
        if args.interactive || args.tty {
            return Err(CliError::aac(anyhow!(
                "exec -d runs in the background: -i and -t need a caller attached"
            )));
        }
        return exec_detached(&args, &env);
    }
    let req = ExecRequest {
        args: args.command().to_vec(),
        env,
        workdir: args.workdir.clone(),
        user,
        interactive: args.interactive,
        tty: args.tty,
        ..ExecRequest::default()
    };
    let code = engine.exec(&c, &req).await?;
    Ok(u8::try_from(code.rem_euclid(256)).unwrap_or(125))
}

/// `exec -d`: the same exec, run by a child `aac` of its own session with no terminal or
/// streams, so this one returns at once (docker's daemon does the same on its side).
fn exec_detached(args: &ExecArgs, env: &[String]) -> CliResult<u8> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the aac binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("exec");
    for e in env {
        cmd.arg("-e").arg(e);
    }
    if let Some(w) = &args.workdir {
        cmd.arg("-w").arg(w);
    }
    if let Some(u) = &args.user {
        cmd.arg("-u").arg(u);
    }
    cmd.arg(args.name()).args(args.command());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid in the child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().context("starting the background exec")?;
    Ok(0)
}
