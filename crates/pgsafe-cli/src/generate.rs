//! `pgsafe completions SHELL` and `pgsafe man`: shell completions and man pages generated from
//! the command-line definition itself, so they cannot drift from `--help`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Command};
use clap_complete::Shell;

use crate::exit;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write pgsafe.1 and one page per command (pgsafe-backup.1, …) into DIR instead of
    /// printing pgsafe.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(mut cmd: Command, args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pgsafe", &mut out);
    crate::output::write_bytes(&out);
    Ok(exit::OK)
}

/// Prints pgsafe.1, or writes every page into `--dir`.
pub fn man(cmd: Command, args: ManArgs) -> anyhow::Result<u8> {
    let mut cmd = cmd;
    cmd.build();
    match args.dir {
        None => {
            crate::output::write_bytes(&render(cmd)?);
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            for (name, page) in pages(cmd)? {
                let path = dir.join(format!("{name}.1"));
                write(&path, &page)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(exit::OK)
}

/// The main page and one per visible command, as (name, roff bytes).
fn pages(cmd: Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = vec![("pgsafe".to_owned(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("pgsafe-{}", sub.get_name());
        // clap takes command names as &'static str; this process ends right after.
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = sub
            .clone()
            .name(leaked)
            .bin_name(format!("pgsafe {}", sub.get_name()));
        out.push((name, render(page)?));
    }
    Ok(out)
}

fn render(cmd: Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("render the man page")?;
    Ok(out)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}
