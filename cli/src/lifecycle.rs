//! docker's lifecycle verbs beyond run/stop/rm: create, start, restart, pause, unpause,
//! rename, port, attach. Each parses, calls the engine and prints.

use std::io::Write;
use std::time::{Duration, SystemTime};

use aac_runtime::engine::{Container, Engine};
use aac_runtime::logs::{Follower, LogFilter, Stream};
use anyhow::anyhow;
use clap::Args;

use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::run::{self, RunArgs};
use crate::terminal;

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the container's output and return its exit code.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach this process's stdin to the container's (it needs `create -i`).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container (name or ID).
    pub container: String,
    /// Its new name.
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// Only this port: `PORT` or `PORT/PROTO`.
    pub port: Option<String>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach this process's stdin.
    #[arg(long)]
    pub no_stdin: bool,
    /// Forward the signals aac receives to the container (docker's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    pub container: String,
}

/// `aac create`: the flags of `aac run`; prints the new container's ID.
pub async fn create(ctx: &Ctx, args: RunArgs) -> CliResult<u8> {
    let agent = run::agent_from_args(&args)?;
    let engine = ctx.engine()?;
    let how = &args.behaviour;
    let created = engine
        .create(run::create_options(
            agent,
            how,
            Some(args.image().to_string()),
            None,
        ))
        .await?;
    for w in &created.warnings {
        eprintln!("aac: warning: {w}");
    }
    println!("{}", created.container.rec.id);
    Ok(0)
}

/// Apply `op` to each named container, docker's way: print each name done, or its error;
/// exit 1 when any failed.
async fn each<'a, F, Fut>(engine: &'a Engine, names: &'a [String], op: F) -> CliResult<u8>
where
    F: Fn(&'a Engine, Container) -> Fut,
    Fut: std::future::Future<Output = Result<(), aac_runtime::engine::EngineError>> + 'a,
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

pub async fn start(ctx: &Ctx, args: StartArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    if !(args.attach || args.interactive) {
        return each(engine, &args.names, |e, c| async move {
            if e.is_running(&c).await {
                // docker: starting a running container does nothing.
                return Ok(());
            }
            let started = e.start_any(&c).await?;
            for w in &started.warnings {
                eprintln!("aac: warning: {w}");
            }
            Ok(())
        })
        .await;
    }
    let [name] = args.names.as_slice() else {
        return Err(CliError::aac(anyhow!(
            "you cannot start and attach multiple containers at once"
        )));
    };
    let c = engine.load(name)?;
    // Output from this start on; the log may hold earlier runs'.
    let follower = engine.follow_logs(&c, filter_from_now());
    let started = engine.start_any(&c).await?;
    for w in &started.warnings {
        eprintln!("aac: warning: {w}");
    }
    let c = engine.load(name)?;
    let how = run::RunBehaviour {
        interactive: args.interactive && c.rec.stdin,
        tty: c.rec.tty,
        ..Default::default()
    };
    let attach_lock = engine.attach_lock(&c)?;
    let mut link = started.link.into_async()?;
    let code = run::attach(engine, &c, follower, &mut link, &how).await?;
    drop(attach_lock);
    Ok(code)
}

fn filter_from_now() -> LogFilter {
    LogFilter {
        since: Some(SystemTime::now()),
        ..Default::default()
    }
}

pub async fn restart(ctx: &Ctx, args: RestartArgs) -> CliResult<u8> {
    let grace = Duration::from_secs(args.time);
    each(ctx.engine()?, &args.names, |e, c| async move {
        let started = e.restart(&c, grace).await?;
        for w in &started.warnings {
            eprintln!("aac: warning: {w}");
        }
        Ok(())
    })
    .await
}

pub async fn pause(ctx: &Ctx, args: PauseArgs) -> CliResult<u8> {
    each(ctx.engine()?, &args.names, |e, c| async move {
        e.pause(&c).await
    })
    .await
}

pub async fn unpause(ctx: &Ctx, args: PauseArgs) -> CliResult<u8> {
    each(ctx.engine()?, &args.names, |e, c| async move {
        e.unpause(&c).await
    })
    .await
}

pub async fn rename(ctx: &Ctx, args: RenameArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let c = engine.load(&args.container)?;
    engine.rename(&c, &args.new_name)?;
    Ok(0)
}

pub async fn port(ctx: &Ctx, args: PortArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let c = engine.load(&args.container)?;
    let ports = engine.ports(&c);
    match &args.port {
        None => {
            for p in &ports {
                println!("{p}");
            }
        }
        Some(wanted) => {
            let (num, proto) = wanted.split_once('/').unwrap_or((wanted, "tcp"));
            let num: u16 = num.parse().map_err(|_| {
                CliError::aac(anyhow!("invalid port {wanted:?}: want PORT or PORT/PROTO"))
            })?;
            let hits: Vec<_> = ports
                .iter()
                .filter(|p| p.container_port == num && p.protocol.as_str() == proto)
                .collect();
            if hits.is_empty() {
                return Err(CliError::aac(anyhow!(
                    "no public port '{num}/{proto}' published for {}",
                    c.rec.name
                )));
            }
            for p in hits {
                println!("{}", p.host_address());
            }
        }
    }
    Ok(0)
}

/// `aac attach`: this terminal on a running container's output (from now on) and stdin,
/// signals forwarded; returns the container's exit code when it exits.
pub async fn attach(ctx: &Ctx, args: AttachArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let c = engine.inspect(&args.container).await?;
    if !engine.is_running(&c).await {
        return Err(CliError::aac(anyhow!(
            "you cannot attach to a stopped container, start it first"
        )));
    }
    if engine.is_paused(&c) {
        return Err(CliError::aac(anyhow!(
            "you cannot attach to a paused container, unpause it first"
        )));
    }
    let mut follower = engine.follow_logs(&c, filter_from_now());
    let _raw = if c.rec.tty {
        terminal::RawMode::enable_if_tty()
    } else {
        None
    };
    if !args.no_stdin && c.rec.stdin {
        engine.attach_stdin(&c)?;
    }
    let _lock = engine.attach_lock(&c)?;
    let mut signals = terminal::Signals::new()?;
    let copy = |f: &mut Follower| {
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        for e in f.poll() {
            let _ = match e.stream {
                Stream::Stdout => out.write_all(e.log.as_bytes()),
                Stream::Stderr => err.write_all(e.log.as_bytes()),
            };
        }
        let _ = out.flush();
    };
    loop {
        copy(&mut follower);
        if !engine.still_writing(&c).await {
            copy(&mut follower);
            let st = engine.status(&c);
            return Ok(u8::try_from(st.exit_code.unwrap_or(0).rem_euclid(256)).unwrap_or(125));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(25)) => {}
            ev = signals.next() => match ev {
                terminal::Event::Signal(s) if args.sig_proxy => {
                    if let Err(e) = engine.signal(&c, s).await {
                        eprintln!("aac: forwarding signal: {e}");
                    }
                }
                terminal::Event::Signal(_) => return Ok(0),
                terminal::Event::Resize => {
                    if let Some((w, h)) = terminal::size() {
                        engine.resize(&c, w, h).await;
                    }
                }
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// `CONTAINER:SRC_PATH`, a host path, or `-` (a tar stream on stdin).
    pub src: String,
    /// `CONTAINER:DEST_PATH`, a host path, or `-` (a tar stream on stdout).
    pub dest: String,
}

/// `CONTAINER:PATH` split in two; `None` for a host path (one with a `/` before any `:`).
fn container_path(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn host_side(arg: &str) -> aac_runtime::engine::HostSide {
    if arg == "-" {
        aac_runtime::engine::HostSide::Stream
    } else {
        aac_runtime::engine::HostSide::Path(arg.into())
    }
}

/// `aac cp`: docker's directions and naming; content and modes are kept.
pub async fn cp(ctx: &Ctx, args: CpArgs) -> CliResult<u8> {
    let engine = ctx.engine()?;
    match (container_path(&args.src), container_path(&args.dest)) {
        (Some((name, src)), None) => {
            let c = engine.load(name)?;
            engine.copy_from(&c, src, host_side(&args.dest)).await?;
        }
        (None, Some((name, dest))) => {
            let c = engine.load(name)?;
            engine.copy_to(&c, host_side(&args.src), dest).await?;
        }
        (Some(_), Some(_)) => {
            return Err(CliError::aac(anyhow!(
                "copying between containers is not supported"
            )))
        }
        (None, None) => {
            return Err(CliError::aac(anyhow!(
                "must specify at least one container source (CONTAINER:PATH)"
            )))
        }
    }
    Ok(0)
}

#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove every stopped container.
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `aac container prune`: docker's output (`Deleted Containers:`, the IDs, the space).
pub async fn container_prune(ctx: &Ctx, args: PruneArgs) -> CliResult<u8> {
    if !args.force {
        eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(0);
        }
    }
    let (removed, failed) = ctx.engine()?.prune_containers().await?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
    }
    for (name, e) in &failed {
        eprintln!("aac: {name}: {e}");
    }
    Ok(u8::from(!failed.is_empty()))
}

/// `aac version`: docker's two sections, the server being the containerd aac would use.
pub async fn version(ctx: &Ctx) -> CliResult<u8> {
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(
        " OS/Arch:    {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!();
    println!("Server: containerd");
    let engine = ctx.engine()?;
    match engine.client().await {
        Ok(c) => match c.version().await {
            Ok(v) => println!(" Version:    {v}"),
            Err(e) => println!(" Error:      {e}"),
        },
        Err(e) => println!(" Not reachable ({e}); containers run on the process backend"),
    }
    println!(
        " Address:    {}",
        engine.containerd_target().address.display()
    );
    println!(" Namespace:  {}", engine.containerd_target().namespace);
    Ok(0)
}
