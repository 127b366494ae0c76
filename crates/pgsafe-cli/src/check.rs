//! `pgsafe check`: is WAL archiving from the server into the repository set up, and does it
//! work? The work is the library's (`pgsafe::check`); this renders its findings.

use std::time::Duration;

use clap::Args;
use pgsafe::check::{CheckOptions, CheckReport, Finding};

use crate::conn::ConnArgs;
use crate::exit;
use crate::render::field;
use crate::repo::RepoArgs;

pub const LONG_ABOUT: &str = "\
Checks that the server archives its WAL into the repository: the server is the cluster \
registered under --cluster; wal_level is not minimal; archive_mode is on (or always); \
archive_library is empty (15+); archive_command runs `pgsafe archive-push` with this \
repository and cluster (or a config file that names them), passes %p, and nothing else \
decides its exit status; the repository exists, is writable by the server's operating-system \
user and has room. Then it writes a small WAL record, forces a WAL switch (pg_switch_wal) and \
waits until the completed WAL file is in the repository, watching pg_stat_archiver: a failure \
counted there while waiting is quoted (the server log has the command's own message), and a \
file the server counts as archived that is not in the repository went somewhere else.

Each problem is printed with what to do, including the exact archive_command line. Also \
reported: the archiver's statistics, the files waiting to be archived and how far archiving is \
behind.";

pub const AFTER_HELP: &str = "\
Exit codes: 0 archiving into the repository works (the switched WAL file arrived); 1 problems \
found (listed, each with its fix); 2 the check could not run (connection, bad options). With \
--json, the report is printed for 0 and 1 alike.

Examples:
  pgsafe check --repo /var/lib/pgsafe --cluster main -d \"host=/var/run/postgresql user=postgres\"
  pgsafe check --cluster main --timeout 5m --json | jq '.problems[].code'";

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// How long to wait for the switched WAL file to arrive in the repository (s, m, h).
    #[arg(long, default_value = "60s", value_parser = pgsafe::config::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the report as JSON on stdout (also when problems were found).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let cluster = crate::repo::cluster_name(args.repo.cluster.as_deref())?;
    let cfg = crate::config::resolved(Some(cluster.as_str()))?;
    let repo = crate::repo::repo_path(args.repo.repo.as_deref(), &cfg)?;
    let conn = crate::config::resolve_conn(&args.conn, &cfg)?;
    // The program archive_command should run: this one, by its absolute path (the archiver's
    // PATH is the postmaster's, often not a login shell's).
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .unwrap_or_else(|| "pgsafe".into());
    // An object store: the suggested archive_command repeats how this run reaches it.
    // (A location that cannot be resolved is the library's finding to report.)
    let (extra_args, s3_advice) = match crate::repo::location(&repo) {
        Ok(pgsafe::storage::Location::S3(c)) => crate::config::s3_command_args(&c),
        _ => (Vec::new(), None),
    };
    if let Some(a) = s3_advice {
        eprintln!("pgsafe: warning: archive_command: {a}");
    }
    let opts = CheckOptions {
        timeout: args.timeout,
        program,
        s3: crate::config::s3_settings()?,
        extra_args,
    };
    if !args.json {
        eprintln!(
            "pgsafe: checking WAL archiving of cluster {cluster} into {} (waiting up to {} s \
             for a switched WAL file)",
            repo.display(),
            args.timeout.as_secs()
        );
    }
    let report = pgsafe::check::check(&repo, &cluster, &conn, &opts)?;
    let code = if report.ok() {
        exit::OK
    } else {
        exit::PROBLEMS
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("ok".into(), report.ok().into());
        }
        crate::render::summary(&v, None, code)?;
    } else {
        render(&report);
    }
    Ok(code)
}

fn render(r: &CheckReport) {
    let s = &r.server;
    field(
        "server",
        format!(
            "PostgreSQL {}, system identifier {}, {}",
            s.version,
            s.system_identifier,
            if s.in_recovery { "standby" } else { "primary" }
        ),
    );
    field("repository", &r.repository.path);
    if let Some(o) = &r.repository.object_store {
        let skew = o.clock_skew_secs.map_or_else(
            || "clock not compared".to_owned(),
            |s| format!("clock {s} s off"),
        );
        let delete = if o.can_delete {
            "may delete"
        } else {
            "may not delete (expire needs a key that may)"
        };
        field(
            "object store",
            if o.writable {
                format!("creates objects, {skew}, {delete}")
            } else {
                "cannot create objects".to_owned()
            },
        );
    }
    field("wal_level", &r.settings.wal_level);
    field("archive_mode", &r.settings.archive_mode);
    if let Some(lib) = &r.settings.archive_library {
        field("archive_library", format!("{lib:?}"));
    }
    field(
        "archive_command",
        pgsafe::check::conf_literal(&r.settings.archive_command),
    );
    if let Some(a) = &r.archiver {
        field(
            "archiver",
            format!(
                "{} archived (last {}), {} failed (last {})",
                a.archived_count,
                a.last_archived_wal.as_deref().unwrap_or("none"),
                a.failed_count,
                a.last_failed_wal.as_deref().unwrap_or("none")
            ),
        );
    }
    let lag = &r.lag;
    if let Some(b) = &lag.backlog {
        field(
            "waiting",
            match &b.oldest_ready {
                Some(o) => format!("{} WAL file(s), oldest {o}", b.ready),
                None => "no WAL file waiting to be archived".into(),
            },
        );
    }
    if let Some(n) = lag.segments_behind {
        field("behind", format!("{n} WAL file(s) before the current one"));
    }
    let sp = &r.spool;
    match (&sp.status, &sp.unreadable) {
        (Some(st), _) => field(
            "spool",
            format!(
                "at the last push ({}): {} WAL file(s) waiting ({} MiB){}; {} dropped \
                 segment(s) not yet in the repository",
                st.updated_at,
                st.ready_files,
                st.ready_bytes >> 20,
                match &st.behind_since {
                    Some(t) => format!(", FALLING BEHIND since {t}"),
                    None => ", keeping up".into(),
                },
                sp.pending_gaps
            ),
        ),
        (None, Some(why)) => field("spool", format!("not read: {why}")),
        (None, None) => field("spool", "no push has written its status yet"),
    }
    if let Some(f) = &r.last_failed_push {
        field(
            "last failed",
            format!(
                "{} at {} ({}: {}){}",
                f.file,
                f.last_failed_at,
                f.error,
                f.message,
                if f.archived_since {
                    "; archived since"
                } else {
                    "; NOT archived yet"
                }
            ),
        );
    }
    if let Some(sw) = &r.switch {
        field(
            "WAL switch",
            format!("at {} completed {}", sw.lsn, sw.segment),
        );
        field(
            "in the repository",
            match &sw.stored_as {
                Some(o) => format!("yes, {o} (after {:.1} s)", sw.waited_ms as f64 / 1000.0),
                None => "NO".into(),
            },
        );
    }
    for f in &r.problems {
        finding("PROBLEM", f);
    }
    for f in &r.warnings {
        finding("warning", f);
    }
    if r.ok() {
        println!(
            "OK: WAL archiving of cluster {} into {} works",
            r.cluster, r.repository.path
        );
    } else {
        println!(
            "NOT OK: {} problem(s); WAL archiving of cluster {} into {} is not proven to work",
            r.problems.len(),
            r.cluster,
            r.repository.path
        );
    }
}

fn finding(what: &str, f: &Finding) {
    println!("{what} ({}): {}", f.code, f.message);
    if let Some(fix) = &f.fix {
        println!("  fix: {fix}");
    }
}
