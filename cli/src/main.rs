//! `aac`: run AI agents described by agent.yaml as containers (containerd) or isolated host
//! processes, without a daemon of its own.

mod agent_input;
mod completion;
mod containers;
mod context;
mod exit;
mod filters;
mod flags;
mod format;
mod images;
mod kube;
mod lifecycle;
mod monitoring;
mod networks;
mod run;
mod scale;
mod secrets;
mod shape;
mod system;
mod terminal;
mod update;
mod usage;
mod volumes;

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
    /// Change the replica count of a scaled agent (spec.scaling).
    Scale(scale::ScaleArgs),
    /// Remove agents: every replica, the supervisor and the published ports.
    Down(scale::DownArgs),
    /// The autoscaler of a scaled agent.
    #[command(subcommand)]
    Autoscale(scale::AutoscaleCommand),
    /// Change the limits or restart policy of running containers.
    Update(update::UpdateArgs),
    /// Create a container without starting it (the flags of `run`); prints its ID.
    Create(Box<run::RunArgs>),
    /// Start created or stopped containers.
    Start(lifecycle::StartArgs),
    /// Stop and start containers again (same name and ID; counts a restart).
    Restart(lifecycle::RestartArgs),
    /// Freeze every process of containers (cgroup freezer).
    Pause(lifecycle::PauseArgs),
    /// Thaw paused containers.
    Unpause(lifecycle::PauseArgs),
    /// Rename a container.
    Rename(lifecycle::RenameArgs),
    /// List a container's published ports, or where one of them answers.
    Port(lifecycle::PortArgs),
    /// Attach this terminal to a running container's output and input.
    Attach(lifecycle::AttachArgs),
    /// Copy files between a running container and the host (`-` for a tar stream).
    Cp(lifecycle::CpArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(lifecycle::ContainerCommand),
    /// Show the versions of aac and of the containerd it uses.
    Version,
    /// What aac runs on: containers, images, containerd, cgroups, kernel.
    Info(system::InfoArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Stop containers: SIGTERM, then SIGKILL after the grace period.
    Stop(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Show everything aac knows about containers, as JSON in docker's shape (or --format).
    Inspect(containers::InspectArgs),
    /// Wait until containers exit and print their exit codes.
    Wait(containers::WaitArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Pull an image from an OCI registry.
    Pull(images::PullArgs),
    /// Write images to an archive (OCI layout and `docker save` at once).
    Save(images::SaveArgs),
    /// Load images from an OCI layout or `docker save` archive.
    Load(images::LoadArgs),
    /// Log in to a registry: check the credentials, keep them (docker's config.json, 0600)
    /// for `pull`.
    Login(images::LoginArgs),
    /// Forget the credentials `login` kept for a registry.
    Logout(images::LogoutArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Shell completions (bash, zsh, fish), generated from this command line.
    Completion(completion::CompletionArgs),
    /// Man pages, generated from this command line.
    Man(completion::ManArgs),
    /// Manage named volumes (shared by both backends).
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Live resource usage of containers (CPU, memory without page cache, network, block I/O).
    Stats(monitoring::StatsArgs),
    /// The processes of a container.
    Top(monitoring::TopArgs),
    /// What happens to containers, live and from the journal.
    Events(monitoring::EventsArgs),
    /// Check this host, prepare rootless use.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Kubernetes: export an agent as manifests, run Kubernetes YAML here.
    #[command(subcommand)]
    Kube(kube::KubeCommand),
    /// Secrets: keys from files, stdin or host environment variables, delivered to agents as
    /// /run/secrets files and environment variables that never enter a spec or a record.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when a reader closes the pipe early
    // (`aac inspect x | grep -q y`) instead of failing on the write.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe {
        nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_DFL);
    }
    // Whatever aac writes is its user's alone unless it says otherwise (state files 0600 in
    // 0700 folders); containers get their own umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // `aac cp`'s helper, run inside a container's root (before any thread exists).
    if let Some(code) = aac_runtime::engine::copy_helper_main() {
        return ExitCode::from(code);
    }
    let cli = match usage::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_tracing(&cli.log_level);
    if let Some(rt) = &cli.global.oci_runtime {
        // Still single-threaded. The monitor aac starts creates the container: it reads the
        // choice from its environment.
        std::env::set_var(aac_runtime::containerd::RUNTIME_ENV, rt);
    }
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
        Command::Validate(_)
        | Command::Spec(_)
        | Command::System(_)
        | Command::Volume(_)
        | Command::Completion(_)
        | Command::Login(_)
        | Command::Logout(_)
        | Command::Man(_) => false,
        Command::Kube(c) => kube::uses_containerd(c),
        Command::Run(a) => a.behaviour.runtime != run::RuntimeChoice::Process,
        Command::Up(a) => a.behaviour.runtime != run::RuntimeChoice::Process,
        Command::Create(a) => a.behaviour.runtime != run::RuntimeChoice::Process,
        _ => true,
    }
}

async fn dispatch(ctx: &context::Ctx, command: Command) -> exit::CliResult<u8> {
    match command {
        Command::Validate(_) => Ok(0),
        Command::Spec(a) => agent_input::spec(ctx, *a).await,
        Command::Run(a) => run::run(ctx, *a).await,
        Command::Up(a) => run::up(ctx, *a).await,
        Command::Scale(a) => scale::scale(ctx, a).await,
        Command::Down(a) => scale::down(ctx, a).await,
        Command::Autoscale(c) => scale::autoscale(ctx, c).await,
        Command::Update(a) => update::update(ctx, a).await,
        Command::Create(a) => lifecycle::create(ctx, *a).await,
        Command::Start(a) => lifecycle::start(ctx, a).await,
        Command::Restart(a) => lifecycle::restart(ctx, a).await,
        Command::Pause(a) => lifecycle::pause(ctx, a).await,
        Command::Unpause(a) => lifecycle::unpause(ctx, a).await,
        Command::Rename(a) => lifecycle::rename(ctx, a).await,
        Command::Port(a) => lifecycle::port(ctx, a).await,
        Command::Attach(a) => lifecycle::attach(ctx, a).await,
        Command::Cp(a) => lifecycle::cp(ctx, a).await,
        Command::Container(lifecycle::ContainerCommand::Prune(a)) => {
            lifecycle::container_prune(ctx, a).await
        }
        Command::Version => lifecycle::version(ctx).await,
        Command::Info(a) => system::info(ctx, a).await,
        Command::Login(a) => images::login(a).await,
        Command::Logout(a) => images::logout(a).await,
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
        Command::Image(images::ImageCommand::Tag(a)) => images::tag(ctx, a).await,
        Command::Image(images::ImageCommand::Inspect(a)) => images::inspect(ctx, a).await,
        Command::Image(images::ImageCommand::Prune(a)) => images::prune(ctx, a).await,
        Command::Image(images::ImageCommand::Save(a)) | Command::Save(a) => {
            images::save(ctx, a).await
        }
        Command::Image(images::ImageCommand::Load(a)) | Command::Load(a) => {
            images::load(ctx, a).await
        }
        Command::Network(c) => networks::run(ctx, c),
        Command::Volume(c) => volumes::run(ctx, c),
        Command::Completion(a) => completion::completion(a),
        Command::Man(a) => completion::man(a),
        Command::Stats(a) => monitoring::stats(ctx, a).await,
        Command::Top(a) => monitoring::top(ctx, a).await,
        Command::Events(a) => monitoring::events(ctx, a).await,
        Command::System(c) => system::run(ctx, c).await,
        Command::Kube(c) => kube::run(ctx, c).await,
        Command::Secret(c) => secrets::run(ctx, c).await,
    }
}

/// Crates whose debug and trace output carries request headers (registry credentials,
/// bearer tokens) or raw TLS and HTTP/2 frames: capped at `info` whatever `AAC_LOG` asks.
const CAPPED_LOG_TARGETS: &[&str] = &[
    "ureq",
    "ureq_proto",
    "rustls",
    "tonic",
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "http",
];

/// The `AAC_LOG` / `--log-level` filter with [`CAPPED_LOG_TARGETS`] held at `info`: the
/// user's directives for those crates (or their modules) are dropped, then the caps added.
fn log_filter(level: &str) -> String {
    let capped = |d: &str| {
        let target = d.split(['=', '[']).next().unwrap_or("").trim();
        CAPPED_LOG_TARGETS.iter().any(|c| {
            target == *c
                || target
                    .strip_prefix(c)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    };
    let mut directives: Vec<String> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !capped(d))
        .map(str::to_string)
        .collect();
    if directives.is_empty() {
        directives.push("warn".to_string());
    }
    directives.extend(CAPPED_LOG_TARGETS.iter().map(|c| format!("{c}=info")));
    directives.join(",")
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter("warn")));
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
    fn log_filter_caps_http_and_tls_crates() {
        let f = log_filter("trace,ureq=trace,rustls::client=debug,aac_runtime=debug");
        assert!(f.starts_with("trace,aac_runtime=debug,"), "{f}");
        assert!(!f.contains("=trace") && !f.contains("=debug,rustls"), "{f}");
        assert!(f.contains("ureq=info") && f.contains("h2=info") && f.contains("hyper=info"));
        assert!(log_filter("").starts_with("warn,"));
    }

    fn parse(args: &[&str]) -> Cli {
        usage::parse_from::<Cli, _, _>(args.iter().copied())
            .unwrap_or_else(|_| panic!("rejected: {args:?}"))
    }

    #[test]
    fn words_after_the_image_belong_to_the_command() {
        let cli = parse(&[
            "aac",
            "run",
            "-e",
            "A=1",
            "img",
            "-v",
            "/:/host",
            "--security-opt",
            "seccomp=unconfined",
            "sh",
            "--",
            "-c",
        ]);
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.image(), "img");
        assert_eq!(
            r.command(),
            [
                "-v",
                "/:/host",
                "--security-opt",
                "seccomp=unconfined",
                "sh",
                "--",
                "-c"
            ]
        );
        assert!(r.flags.volume.is_empty());
        assert!(r.flags.security_opt.is_empty());
        assert_eq!(r.flags.env, ["A=1"]);
        let cli = parse(&["aac", "exec", "c1", "-w", "/", "sh"]);
        let Command::Exec(x) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(
            (x.name(), x.command()),
            ("c1", &["-w".to_string(), "/".into(), "sh".into()][..])
        );
        assert_eq!(x.workdir, None);
    }

    #[test]
    fn verbs_do_not_repeat_the_global_options() {
        let mut cmd = usage::command::<Cli>();
        let top = cmd.render_long_help().to_string();
        assert_eq!(top.matches("--log-level").count(), 1, "{top}");
        let run = cmd
            .find_subcommand_mut("run")
            .unwrap()
            .render_help()
            .to_string();
        assert!(!run.contains("--log-level <"), "{run}");
        assert!(run.contains("see 'aac --help'"), "{run}");
        // still accepted after the verb
        let cli = parse(&["aac", "ps", "--log-level", "debug", "--namespace", "x"]);
        assert_eq!(cli.log_level, "debug");
        assert_eq!(cli.global.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = usage::command::<Cli>()
            .try_get_matches_from(["aac", "run", "--bogus", "img"])
            .unwrap_err();
        let line = usage::one_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("--bogus") && line.ends_with("(see 'aac run --help')"),
            "{line}"
        );
    }

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(CliError::aac(anyhow::anyhow!("x")).code, 125);
    }
}
