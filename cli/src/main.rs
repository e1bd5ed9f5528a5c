//! `aac`: run AI agents described by agent.yaml as containers (containerd) or isolated host
//! processes, without a daemon of its own.

mod agent_input;
mod containers;
mod context;
mod exit;
mod images;
mod monitoring;
mod networks;
mod run;
mod system;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "aac",
    version,
    about = "Run AI agents described by agent.yaml as containers, without a daemon",
    long_about = "aac runs the agent described by an agent.yaml (or by docker-style flags) on \
                  containerd, or as an isolated host process where containerd is absent. \
                  It builds the OCI runtime spec itself and keeps a small monitor (aac-shim) \
                  per container instead of a daemon.",
    propagate_version = true
)]
struct Cli {
    /// Log level for aac's own diagnostics (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "AAC_LOG", default_value = "warn")]
    log_level: String,

    #[command(flatten)]
    global: context::Global,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check an agent.yaml and print every problem with file:line:column (exit 1 if any).
    Validate(agent_input::ValidateArgs),
    /// Print the OCI runtime spec (config.json) aac would run for an agent.
    Spec(Box<agent_input::SpecArgs>),
    /// Run a command in a new container from an image (docker-style flags).
    Run(Box<run::RunArgs>),
    /// Run the agent an agent.yaml describes.
    Up(Box<run::UpArgs>),
    /// List containers.
    Ps(containers::PsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after the grace period.
    Stop(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Show everything aac knows about containers, as JSON.
    Inspect(containers::NamesArgs),
    /// Wait until containers exit and print their exit codes.
    Wait(containers::NamesArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Pull an image from an OCI registry.
    Pull(images::PullArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Live resource usage of containers (CPU, memory without page cache, network, block I/O).
    Stats(monitoring::StatsArgs),
    /// The processes of a container.
    Top(monitoring::TopArgs),
    /// What happens to containers, live and from the journal.
    Events(monitoring::EventsArgs),
    /// Check this host, prepare rootless use.
    #[command(subcommand)]
    System(system::SystemCommand),
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when a reader closes the pipe early
    // (`aac inspect x | grep -q y`) instead of failing on the write.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe {
        nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    // Still single-threaded: the only moment a user namespace can be joined.
    if wants_rootlesskit(&cli.command) {
        if let Err(e) = context::enter_rootlesskit(&cli.global) {
            return CliError::aac(e).report();
        }
    }
    let ctx = context::Ctx::new(cli.global);
    let result = match cli.command {
        Command::Validate(a) => agent_input::validate(a),
        other => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(dispatch(&ctx, other)),
            Err(e) => Err(CliError::aac(e.into())),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => e.report(),
    }
}

/// Whether a command may talk to containerd (and so, with a rootless containerd, runs inside
/// RootlessKit's namespaces as nerdctl's commands do).
fn wants_rootlesskit(command: &Command) -> bool {
    match command {
        Command::Validate(_) | Command::Spec(_) | Command::System(_) => false,
        Command::Run(a) => a.behaviour.runtime != run::RuntimeChoice::Process,
        Command::Up(a) => a.behaviour.runtime != run::RuntimeChoice::Process,
        _ => true,
    }
}

async fn dispatch(ctx: &context::Ctx, command: Command) -> exit::CliResult<u8> {
    match command {
        Command::Validate(_) => Ok(0),
        Command::Spec(a) => agent_input::spec(ctx, *a).await,
        Command::Run(a) => run::run(ctx, *a).await,
        Command::Up(a) => run::up(ctx, *a).await,
        Command::Ps(a) => containers::ps(ctx, a).await,
        Command::Stop(a) => containers::stop(ctx, a).await,
        Command::Kill(a) => containers::kill(ctx, a).await,
        Command::Rm(a) => containers::rm(ctx, a).await,
        Command::Inspect(a) => containers::inspect(ctx, a).await,
        Command::Wait(a) => containers::wait(ctx, a).await,
        Command::Logs(a) => containers::logs(ctx, a).await,
        Command::Exec(a) => containers::exec(ctx, a).await,
        Command::Images(a) => images::list(ctx, a).await,
        Command::Pull(a) => images::pull(ctx, a).await,
        Command::Image(images::ImageCommand::Ls(a)) => images::list(ctx, a).await,
        Command::Image(images::ImageCommand::Rm(a)) => images::remove(ctx, a).await,
        Command::Image(images::ImageCommand::Import(a)) => images::import(ctx, a).await,
        Command::Network(c) => networks::run(ctx, c),
        Command::Stats(a) => monitoring::stats(ctx, a).await,
        Command::Top(a) => monitoring::top(ctx, a).await,
        Command::Events(a) => monitoring::events(ctx, a).await,
        Command::System(c) => system::run(ctx, c).await,
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(CliError::aac(anyhow::anyhow!("x")).code, 125);
    }
}
