//! Reading the command line the docker way.
//!
//! - A usage error (unknown flag, missing argument, bad value) is aac's failure: exit 125 and
//!   one line naming the problem and where help is, never clap's exit 2 and usage block.
//!   `--help` and `--version` still print and exit 0.
//! - The global options (`--log-level`, `--address`, `--namespace`) are listed once, in
//!   `aac --help`; every verb still accepts them, but its help only points there. clap would
//!   otherwise repeat them inside every verb's help: it copies a `global = true` argument into
//!   each subcommand unless the subcommand already has one with that id, so each subcommand
//!   gets a hidden copy of its own before clap builds the tree.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, Command, CommandFactory, FromArgMatches};

use crate::exit::EXIT_AAC;

/// The CLI definition as aac presents it (global options hidden in the verbs' help).
pub fn command<T: CommandFactory>() -> Command {
    let cmd = T::command();
    let globals: Vec<Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    if globals.is_empty() {
        return cmd;
    }
    let names: Vec<String> = globals
        .iter()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let note = format!(
        "Global options ({}): see '{} --help'.",
        names.join(", "),
        cmd.get_name()
    );
    hide_in_subcommands(cmd, &globals, &note)
}

fn hide_in_subcommands(mut cmd: Command, globals: &[Arg], note: &str) -> Command {
    for sc in cmd.get_subcommands_mut() {
        let mut owned = std::mem::take(sc);
        for g in globals {
            if owned.get_arguments().all(|a| a.get_id() != g.get_id()) {
                owned = owned.arg(g.clone().hide(true));
            }
        }
        if owned.get_after_help().is_none() {
            owned = owned.after_help(note.to_string());
        }
        *sc = hide_in_subcommands(owned, globals, note);
    }
    cmd
}

/// Parse the process arguments; on help or version, or on a usage error, the exit code to
/// end with (the message is already printed).
pub fn parse<T: CommandFactory + FromArgMatches>() -> Result<T, ExitCode> {
    parse_from::<T, _, _>(std::env::args_os())
}

pub fn parse_from<T, I, A>(args: I) -> Result<T, ExitCode>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = command::<T>();
    let result = cmd
        .try_get_matches_from_mut(args)
        .and_then(|m| T::from_arg_matches(&m).map_err(|e| e.format(&mut cmd)));
    match result {
        Ok(t) => Ok(t),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                Err(ExitCode::SUCCESS)
            }
            // `aac` or `aac network` alone: the help, as docker prints it, but not a success.
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                Err(ExitCode::from(EXIT_AAC))
            }
            _ => {
                eprintln!("aac: {}", one_line(&e));
                Err(ExitCode::from(EXIT_AAC))
            }
        },
    }
}

/// clap's message without its `error:` prefix, usage block and tips, plus where help is:
/// `unexpected argument '--bogus' found (see 'aac run --help')`.
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid arguments");
    let msg = first.strip_prefix("error:").unwrap_or(first).trim();
    match usage_command(e) {
        Some(c) => format!("{msg} (see '{c} --help')"),
        None => msg.to_string(),
    }
}

/// `aac run` from clap's `Usage: aac run [OPTIONS] <IMAGE...>`.
fn usage_command(e: &clap::Error) -> Option<String> {
    let ContextValue::StyledStr(usage) = e.get(ContextKind::Usage)? else {
        return None;
    };
    let usage = usage.to_string();
    let line = usage.lines().find(|l| !l.trim().is_empty())?;
    let line = line.trim();
    let line = line.strip_prefix("Usage:").unwrap_or(line);
    let words: Vec<&str> = line
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}
