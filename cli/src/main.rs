//! `aac`: run AI agents described by agent.yaml as containers (containerd) or isolated host
//! processes, without a daemon of its own.

mod agent_input;
mod exit;

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

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check an agent.yaml and print every problem with file:line:column (exit 1 if any).
    Validate(agent_input::ValidateArgs),
    /// Print the OCI runtime spec (config.json) aac would run for an agent.
    Spec(agent_input::SpecArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    let result = match cli.command {
        Command::Validate(a) => agent_input::validate(a),
        Command::Spec(a) => agent_input::spec(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => e.report(),
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
