//! `aac completion bash|zsh|fish` and `aac man`: shell completions and man pages generated
//! from the CLI definition itself (clap_complete, clap_mangen), so they never drift from it.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory, ValueEnum};

use crate::exit::CliResult;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(after_help = "Load now:   source <(aac completion bash)\n\
                        Install:    aac completion bash > /etc/bash_completion.d/aac\n\
                        \x20           aac completion zsh > /usr/local/share/zsh/site-functions/_aac\n\
                        \x20           aac completion fish > ~/.config/fish/completions/aac.fish")]
pub struct CompletionArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write aac.1 and one aac-VERB.1 page per command into this folder (default: print
    /// aac.1 on stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn completion(args: CompletionArgs) -> CliResult<u8> {
    let mut cmd = crate::Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "aac", &mut std::io::stdout());
    Ok(0)
}

/// Every page: `aac`, then `aac-VERB` and `aac-NOUN-VERB` for the subcommands.
fn pages(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let name = format!("{prefix}-{}", sub.get_name());
        // clap names are 'static without its "string" feature; this runs once per page.
        let page_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = sub.clone().name(page_name);
        pages(sub, &name, out);
        out.push((name, page));
    }
}

pub fn man(args: ManArgs) -> CliResult<u8> {
    let cmd = crate::Cli::command();
    let Some(dir) = args.out else {
        clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .context("writing the man page")?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut all = vec![("aac".to_string(), cmd.clone())];
    pages(&cmd, "aac", &mut all);
    for (name, page) in all {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .with_context(|| format!("rendering {name}.1"))?;
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(0)
}
