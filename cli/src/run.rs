//! `aac run` and `aac up`: build the agent from flags or agent.yaml, let the engine create
//! and start it, then wait for readiness (`-d`) or follow it in the foreground.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aac_runtime::agent::{self, Agent, Diagnostics};
use aac_runtime::engine::{self, AsyncMonitorLink, Container, CreateOptions, Engine};
use aac_runtime::logs::{Follower, Stream};
use aac_runtime::status::Phase;
use anyhow::anyhow;
use clap::{Args, ValueEnum};

use crate::agent_input::load_agent;
use crate::context::Ctx;
use crate::exit::{CliError, CliResult};
use crate::flags::RunFlags;
use crate::terminal;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// containerd when its socket answers, else the process backend.
    #[default]
    Auto,
    Containerd,
    Process,
}

impl From<RuntimeChoice> for engine::RuntimeChoice {
    fn from(c: RuntimeChoice) -> Self {
        match c {
            RuntimeChoice::Auto => engine::RuntimeChoice::Auto,
            RuntimeChoice::Containerd => engine::RuntimeChoice::Containerd,
            RuntimeChoice::Process => engine::RuntimeChoice::Process,
        }
    }
}
/// Behaviour of a run, shared by `run` and `up`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunBehaviour {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep stdin open and connect it to the container.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal for the container.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (unique).
    #[arg(long)]
    pub name: Option<String>,
    /// Which backend runs the agent.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// With -d: return at once instead of waiting until the health check passes.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub behaviour: RunBehaviour,
    #[command(flatten)]
    pub flags: RunFlags,
    /// The image to run (with --runtime process: the program), then the command and its
    /// arguments (replacing the image's CMD). Every word after IMAGE belongs to the command,
    /// even one that looks like an aac flag, as with docker.
    #[arg(required = true, value_name = "IMAGE [COMMAND [ARG...]]")]
    pub argv: Vec<String>,
}

impl RunArgs {
    /// The image (with --runtime process: the program).
    pub fn image(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// The words after IMAGE.
    pub fn command(&self) -> &[String] {
        self.argv.get(1..).unwrap_or_default()
    }
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// agent.yaml, or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[command(flatten)]
    pub behaviour: RunBehaviour,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// One problem on one line, several each on its own.
fn invalid(d: Diagnostics) -> CliError {
    if d.0.len() == 1 {
        CliError::aac(anyhow!("invalid agent: {d}"))
    } else {
        CliError::aac(anyhow!("invalid agent:\n{d}"))
    }
}

/// A name usable as a container name from an image reference: `docker.io/x/my-agent:1` ->
/// `my-agent`.
fn base_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split(['@', ':']).next().unwrap_or(last);
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.is_empty() {
        "agent".to_string()
    } else {
        clean.chars().take(40).collect()
    }
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> CliResult<u8> {
    let agent = agent_from_args(&args)?;
    launch(
        ctx,
        agent,
        &args.behaviour,
        Some(args.image().to_string()),
        None,
    )
    .await
}

/// The agent `aac run`/`aac create` flags describe.
pub(crate) fn agent_from_args(args: &RunArgs) -> CliResult<Agent> {
    let name = base_name(args.image());
    let mut agent = Agent::for_image(&name, args.image());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let host_env = |k: &str| std::env::var(k).ok();
    let mut problems = args.flags.apply(&mut agent, &cwd, &host_env);
    if !args.command().is_empty() {
        agent.spec.args = args.command().to_vec();
    }
    problems.extend(agent::validate(&agent, None));
    if !problems.is_empty() {
        return Err(invalid(Diagnostics(problems)));
    }
    Ok(agent)
}

pub async fn up(ctx: &Ctx, args: UpArgs) -> CliResult<u8> {
    let agent = load_agent(&args.path, &args.flags).map_err(invalid)?;
    let file = crate::agent_input::agent_file(&args.path);
    if engine::is_scaled(&agent) {
        return up_scaled(ctx, agent, &args.behaviour, file).await;
    }
    launch(ctx, agent, &args.behaviour, None, Some(file)).await
}

/// An agent with spec.scaling: its replicas and supervisor, in the background; waits until
/// every replica is healthy unless --no-wait, then prints the replicas' names.
async fn up_scaled(
    ctx: &Ctx,
    agent: Agent,
    how: &RunBehaviour,
    file: std::path::PathBuf,
) -> CliResult<u8> {
    if how.interactive || how.tty || how.rm {
        return Err(CliError::aac(anyhow!(
            "-i, -t and --rm are for one container; a scaled agent (spec.scaling) runs in the background"
        )));
    }
    let engine = ctx.engine()?;
    let report = engine
        .up(engine::UpOptions {
            agent,
            name: how.name.clone(),
            runtime: how.runtime.into(),
            agent_file: Some(file),
        })
        .await?;
    for w in &report.warnings {
        eprintln!("aac: warning: {w}");
    }
    if !how.no_wait {
        for c in &report.containers {
            engine.wait_healthy(c).await?;
        }
        if report.supervised {
            engine
                .wait_serving(&report.name, Duration::from_secs(60))
                .await?;
        }
    }
    for c in &report.containers {
        println!("{}", c.rec.name);
    }
    Ok(0)
}

/// How long a foreground `--rm` run waits for the container's removal.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(15);

/// What `aac run`, `up` and `create` ask the engine for.
pub(crate) fn create_options(
    agent: Agent,
    how: &RunBehaviour,
    image_arg: Option<String>,
    agent_file: Option<PathBuf>,
) -> CreateOptions {
    CreateOptions {
        agent,
        name: how.name.clone(),
        runtime: how.runtime.into(),
        auto_remove: how.rm,
        interactive: how.interactive,
        tty: how.tty,
        image_arg,
        from_file: agent_file.is_some(),
        agent_file,
    }
}

async fn launch(
    ctx: &Ctx,
    agent: Agent,
    how: &RunBehaviour,
    image_arg: Option<String>,
    agent_file: Option<PathBuf>,
) -> CliResult<u8> {
    let engine = ctx.engine()?;
    let opts = create_options(agent, how, image_arg, agent_file);
    let (created, started) = if how.detach {
        engine.run(opts).await?
    } else {
        engine.run_attached(opts).await?
    };
    for w in created.warnings.iter().chain(&started.warnings) {
        eprintln!("aac: warning: {w}");
    }
    let c = created.container;
    if how.detach {
        if !how.no_wait {
            if let Err(e) = engine.wait_healthy(&c).await {
                // Nothing is left running behind the error (docker compose's --wait
                // leaves it; a failed `run` here leaves nothing, as a failed start does).
                let removed = match async {
                    let now = engine.load(&c.rec.id)?;
                    engine.remove_with_volumes(&now, true, true).await
                }
                .await
                {
                    Ok(()) => "; it was removed".to_string(),
                    Err(r) => format!("; removing it failed too: {r}"),
                };
                return Err(CliError::aac(anyhow::anyhow!("{e}{removed}")));
            }
        }
        println!("{}", c.rec.id);
        return Ok(0);
    }
    // Foreground: follow the log from its first line; --rm waits for our lock before it
    // removes the records we read.
    let follower = engine.follow_logs(&c, Default::default());
    let attach_lock = engine.attach_lock(&c)?;
    let mut link = started.link.into_async()?;
    let code = attach(engine, &c, follower, &mut link, how).await?;
    drop(attach_lock);
    if how.rm {
        // Like docker, return once the container is gone: its name is free again then. The
        // monitor removes it once we let go of the link, and closes the link when done.
        if !link.release(REMOVE_TIMEOUT).await {
            tracing::warn!(
                "container {} was not removed within {REMOVE_TIMEOUT:?}",
                c.rec.id
            );
        } else if engine.dirs().container_dir(&c.rec.id).exists() {
            // The monitor that closed the link died, or another one took over.
            wait_removed(engine, &c.rec.id).await;
        }
    }
    Ok(code)
}

/// Wait (bounded) until a monitor we have no link to has removed an `--rm` container's
/// records.
async fn wait_removed(engine: &Engine, id: &str) {
    let dir = engine.dirs().container_dir(id);
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    while dir.exists() {
        if Instant::now() > deadline {
            tracing::warn!("container {id} was not removed within {REMOVE_TIMEOUT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Stream the container's output, forward signals and stdin, and return its exit code. The
/// monitor reports the exit on `link`; should it close the link without one (it died, or was
/// replaced), the status file says when the container exits.
pub(crate) async fn attach(
    engine: &Engine,
    c: &Container,
    mut follower: Follower,
    link: &mut AsyncMonitorLink,
    how: &RunBehaviour,
) -> CliResult<u8> {
    let _raw = if how.tty {
        terminal::RawMode::enable_if_tty()
    } else {
        None
    };
    if how.interactive {
        engine.attach_stdin(c)?;
    }
    if how.tty {
        if let Some((w, h)) = terminal::size() {
            engine.resize(c, w, h).await;
        }
    }
    let mut signals = terminal::Signals::new()?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut copy_output = |follower: &mut Follower| {
        for e in follower.poll() {
            let _ = match e.stream {
                Stream::Stdout => stdout.write_all(e.log.as_bytes()),
                Stream::Stderr => stderr.write_all(e.log.as_bytes()),
            };
        }
        let _ = stdout.flush();
    };
    let exit_code = |code: i32| u8::try_from(code.rem_euclid(256)).unwrap_or(125);
    // Output is read from the log: often at first, then at a calmer pace.
    let started = Instant::now();
    loop {
        let poll = if how.tty || started.elapsed() < Duration::from_secs(2) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(25)
        };
        copy_output(&mut follower);
        if link.closed {
            let st = engine.status(c);
            if matches!(st.phase, Phase::Exited | Phase::Restarting) && st.exit_code.is_some() {
                copy_output(&mut follower);
                return Ok(exit_code(st.exit_code.unwrap_or(0)));
            }
        }
        tokio::select! {
            code = link.next_exit(), if !link.closed => {
                if let Some(code) = code {
                    // The monitor reports the exit after the output is in the log.
                    copy_output(&mut follower);
                    return Ok(exit_code(code));
                }
            }
            _ = tokio::time::sleep(poll) => {}
            sig = signals.next() => {
                match sig {
                    terminal::Event::Signal(s) => {
                        if let Err(e) = engine.signal(c, s).await {
                            eprintln!("aac: forwarding signal: {e}");
                        }
                    }
                    terminal::Event::Resize => {
                        if let Some((w, h)) = terminal::size() {
                            engine.resize(c, w, h).await;
                        }
                    }
                }
            }
        }
    }
}
