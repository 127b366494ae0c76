//! `pgsafe doctor PGDATA`: render the doctor's verdict (human or `--json`), and `--fix`.

use std::path::PathBuf;

use clap::Args;
use pgsafe::conninfo::{ConnInput, ConnSettings};
use pgsafe::doctor::{
    Diagnosis, DoctorError, DoctorOptions, DoctorState, FixOutcome, Verdict, apply_fix, diagnose,
};
use serde::Serialize;

use crate::exit;

pub const LONG_ABOUT: &str = "\
Examines a data directory and tells a crashed server from a restored backup.

The trap: a data directory holding backup_label is either a primary that crashed during an \
exclusive backup (pg_start_backup, PostgreSQL 14 and older) — it may refuse to start, and \
removing the label is the fix — or a restored backup, where removing that same file silently \
corrupts the database. PostgreSQL cannot tell the two apart, and its own hint (\"try removing \
the file backup_label\") is right only for the first.

pgsafe doctor weighs pg_control, backup_label, backup_label.old, tablespace_map, the recovery \
signal files, postmaster.pid, pg_wal, restore_command in the configuration, a pgsafe restore \
marker and, with --connect, what the server says — and, because a file copy of a running server \
looks exactly like the crashed original, the WAL archive named by the copied archive_command / \
restore_command (backup history files, newer WAL) and pgsafe's holder records (--run-dir). It answers with a one-line verdict, the \
evidence, a confidence, the exact commands to run next, and what you must confirm when the \
evidence is ambiguous. It never recommends removing backup_label unless the evidence is \
unambiguous. Read-only unless --fix is given.";

pub const AFTER_HELP: &str = "\
States:
  1 running                              6 restored backup that will fail or corrupt
  2 cleanly shut down                    7 restored, recovery finished
  3 crashed (crash recovery will run)    8 rewound by pg_rewind
  4 crashed during an exclusive backup   9 not a data directory / unknown
  5 restored backup, ready to recover

Exit codes (pgsafe's one table): 0 healthy or ready to start as it is, with nothing to \
confirm (states 1, 2, 3, 5, 7); 1 needs attention (states 4, 8, and any verdict that lists what \
you must confirm); 2 error or not a data directory (state 9); 5 dangerous (state 6: a restored \
backup or copy that would fail or be corrupted); 130 interrupted.

Examples:
  pgsafe doctor /var/lib/postgresql/14/main
  pgsafe doctor --connect \"host=/var/run/postgresql user=postgres\" \"$PGDATA\"
  pgsafe doctor --config-file /etc/postgresql/14/main/postgresql.conf /var/lib/postgresql/14/main
  pgsafe doctor --fix /var/lib/postgresql/14/main     # state 4 only: renames backup_label
  pgsafe doctor --json \"$PGDATA\" | jq .verdict.state";

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The data directory to examine (the folder initdb created; holds PG_VERSION and global/).
    #[arg(value_name = "PGDATA", env = "PGDATA")]
    pub pgdata: PathBuf,
    /// Print one JSON document (verdict, facts, and what --fix did) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also ask the server: is it up, in recovery, in an exclusive backup (10–14); archive and
    /// restore settings. A libpq connection string or URI; PG* variables and ~/.pgpass apply.
    #[arg(long, value_name = "CONNINFO")]
    pub connect: Option<String>,
    /// A postgresql.conf kept outside PGDATA (Debian/Ubuntu: /etc/postgresql/<ver>/<cluster>/),
    /// read for restore_command; may be repeated.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_files: Vec<PathBuf>,
    /// A pgsafe run directory whose snapshot-mode holder records (`pgsafe start`/`stop`) to
    /// read as evidence; may be repeated. Default: $PGSAFE_RUN_DIR, $XDG_RUNTIME_DIR/pgsafe,
    /// /tmp/pgsafe-<uid> and /run/user/<uid>/pgsafe for you and for the data directory's owner.
    #[arg(long = "run-dir", value_name = "DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Perform the verdict's repair when it is unambiguous — only for a server that crashed
    /// during an exclusive backup (state 4): rename backup_label to
    /// backup_label.pgsafe-removed (never delete, never overwrite). Refused otherwise.
    #[arg(long)]
    pub fix: bool,
}

/// The exit code for a verdict (the table in `exit`): 0 only when it may be started as it is
/// with nothing to confirm; 5 for the dangerous state, 2 when it is not a data directory.
pub fn code(v: &Verdict) -> u8 {
    match v.state {
        _ if v.starts_safely_as_is() => exit::OK,
        DoctorState::RestoredBroken => exit::DANGEROUS,
        DoctorState::Unknown => exit::ERROR,
        _ => exit::PROBLEMS,
    }
}

#[derive(Serialize)]
struct FixReport<'a> {
    applied: bool,
    refused: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a FixOutcome>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    path: &'a std::path::Path,
    verdict: &'a Verdict,
    facts: &'a pgsafe::doctor::Facts,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<FixReport<'a>>,
}

fn connect_settings(conninfo: &str) -> anyhow::Result<ConnSettings> {
    let input = ConnInput {
        dbname: Some(conninfo.to_owned()),
        ..ConnInput::default()
    };
    let mut s = ConnSettings::resolve(&input, &|k| std::env::var(k).ok())?;
    for w in &s.warnings {
        eprintln!("pgsafe: warning: {w}");
    }
    // A doctor must answer even when the server hangs.
    if s.connect_timeout.is_none() {
        s.connect_timeout = Some(5);
    }
    Ok(s)
}

/// Runs doctor; errors go to `main` like every command's (exit 2, `--json`: an error object).
pub fn run(a: DoctorArgs) -> anyhow::Result<u8> {
    let conn = a.connect.as_deref().map(connect_settings).transpose()?;
    let run_dirs = if a.run_dirs.is_empty() {
        pgsafe::doctor::default_run_dirs(&a.pgdata, &|k| std::env::var(k).ok())
    } else {
        a.run_dirs.clone()
    };
    let opts = DoctorOptions {
        conn,
        config_files: a.config_files.clone(),
        run_dirs,
    };
    let diag = diagnose(&a.pgdata, &opts)?;
    if !a.fix {
        if a.json {
            print_json(&a, &diag, None)?;
        } else {
            print_verdict(&diag.verdict, &diag.facts);
        }
        return Ok(code(&diag.verdict));
    }
    match apply_fix(&a.pgdata, &opts, &diag) {
        Ok(outcome) => {
            if a.json {
                let r = FixReport {
                    applied: true,
                    refused: None,
                    outcome: Some(&outcome),
                };
                print_json(&a, &diag, Some(r))?;
            } else {
                print_verdict(&diag.verdict, &diag.facts);
                println!();
                println!(
                    "Fixed: renamed {} to {} (durably; the file is kept).",
                    outcome.renamed_from.display(),
                    outcome.renamed_to.display()
                );
                println!();
                println!("Now:");
                print_verdict(&outcome.after, &diag.facts);
            }
            Ok(code(&outcome.after))
        }
        Err(DoctorError::FixRefused(why)) => {
            if a.json {
                let r = FixReport {
                    applied: false,
                    refused: Some(why.to_string()),
                    outcome: None,
                };
                print_json(&a, &diag, Some(r))?;
            } else {
                print_verdict(&diag.verdict, &diag.facts);
                println!();
                println!("--fix: nothing done: {why}");
            }
            eprintln!("pgsafe: --fix refused: {why}");
            // Nothing to fix in a healthy directory is still healthy; otherwise the state's code.
            Ok(code(&diag.verdict))
        }
        Err(e) => Err(e.into()),
    }
}

fn print_json(a: &DoctorArgs, d: &Diagnosis, fix: Option<FixReport<'_>>) -> anyhow::Result<()> {
    let out = JsonOut {
        path: &a.pgdata,
        verdict: &d.verdict,
        facts: &d.facts,
        fix,
    };
    crate::render::json(&out)
}

const WIDTH: usize = 100;

/// Word-wraps `text` to `WIDTH`, the first line prefixed by `first`, the rest by `rest`.
fn wrap(first: &str, rest: &str, text: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out
}

/// Short verdict first, then evidence, warnings, commands, and what to confirm.
fn print_verdict(v: &Verdict, facts: &pgsafe::doctor::Facts) {
    println!("{}", wrap("Verdict: ", "         ", &v.summary));
    let mut about = format!(
        "state {}/9: {}; confidence {}; {}",
        v.state_number,
        v.state.title(),
        v.confidence,
        facts.path.display()
    );
    if let Some(ver) = facts.version {
        about.push_str(&format!("; PostgreSQL {}", ver.major_name()));
    }
    if let Some(c) = &facts.control {
        about.push_str(&format!("; system identifier {}", c.system_identifier));
    }
    println!("{}", wrap("         [", "          ", &format!("{about}]")));
    if !v.evidence.is_empty() {
        println!();
        println!("Evidence:");
        for e in &v.evidence {
            println!("{}", wrap("  - ", "    ", e));
        }
    }
    if !v.caveats.is_empty() {
        println!();
        println!("Warnings:");
        for c in &v.caveats {
            println!("{}", wrap("  ! ", "    ", c));
        }
    }
    if !v.next_steps.is_empty() {
        println!();
        println!("Next steps:");
        for (i, s) in v.next_steps.iter().enumerate() {
            let n = format!("  {}. ", i + 1);
            if s.action.is_empty() {
                if let Some(c) = &s.command {
                    println!("       {c}");
                }
                continue;
            }
            println!("{}", wrap(&n, "     ", &s.action));
            if let Some(c) = &s.command {
                println!("       {c}");
            }
        }
    }
    if !v.must_confirm.is_empty() {
        println!();
        println!("Confirm before acting:");
        for c in &v.must_confirm {
            println!("{}", wrap("  ? ", "    ", c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_width_with_hanging_indent() {
        let text = "word ".repeat(60);
        let w = wrap("  - ", "    ", &text);
        for (i, l) in w.lines().enumerate() {
            assert!(l.chars().count() <= WIDTH, "{l}");
            assert!(l.starts_with(if i == 0 { "  - " } else { "    " }));
        }
        assert_eq!(wrap("> ", "  ", "short"), "> short");
    }
}
