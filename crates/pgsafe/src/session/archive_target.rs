//! Where does the server archive its WAL: into which pgsafe repository and cluster?
//!
//! A backup into a repository need not copy WAL when the server already archives into that
//! repository's cluster (README "Backups whose WAL is in the repository's archive"), and
//! `pgsafe check` explains archiving that does not go there. Both ask this module.
//!
//! The server archives with `archive_command` when `archive_mode` is `on` (a primary) or
//! `always` (also a standby) and `archive_library` (15+) is empty
//! (src/backend/postmaster/pgarch.c; `XLogArchivingActive`/`XLogArchivingAlways` in
//! src/include/access/xlog.h). The command is read as the shell would split it (`%p`/`%f` are
//! PostgreSQL's placeholders, src/common/archive.c); it archives into pgsafe when it runs a
//! program named `pgsafe` with the subcommand `archive-push`. Its `--repo` and `--cluster` name
//! the repository; missing ones come from the config file the command names (`--config`), else
//! the default file (README "Config file") — the variable `PGSAFE_CONFIG` of the server's
//! environment cannot be seen from here, and the reason says which file was read. Anything
//! pgsafe cannot read this way (shell variables, a wrapper script) is "not into this
//! repository", never guessed: the backup then includes its WAL, which is always safe.

use std::path::{Path, PathBuf};

use postgres::Client;

use crate::types::PgVersion;

/// The server's archiving settings, as `current_setting` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerArchiving {
    /// `off`, `on` or `always`.
    pub archive_mode: String,
    /// Whether the server is a standby (which archives only with `always`).
    pub in_recovery: bool,
    /// `archive_command` (`(disabled)` when archiving is off: `show_archive_command` in
    /// src/backend/access/transam/xlog.c).
    pub archive_command: String,
    /// `archive_library` (15+; empty: the command is used).
    pub archive_library: String,
}

/// `pgsafe archive-push` as an `archive_command` runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushCommand {
    /// `--repo`, if given.
    pub repo: Option<PathBuf>,
    /// `--cluster`, if given.
    pub cluster: Option<String>,
    /// `--config`, if given.
    pub config: Option<PathBuf>,
}

/// Does the server archive into a given repository's cluster?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivesInto {
    /// Yes: every WAL file the server archives is pushed into it. `how` says why pgsafe
    /// concludes so, in words.
    Repository { how: String },
    /// No, or not that pgsafe can tell: why, in words.
    Elsewhere { why: String },
}

impl ArchivesInto {
    pub fn is_repository(&self) -> bool {
        matches!(self, ArchivesInto::Repository { .. })
    }

    /// The explanation, whichever it is.
    pub fn reason(&self) -> &str {
        match self {
            ArchivesInto::Repository { how } => how,
            ArchivesInto::Elsewhere { why } => why,
        }
    }
}

impl ServerArchiving {
    /// Reads the settings (any user may: none of them is restricted to superusers).
    pub fn read(
        client: &mut Client,
        version: PgVersion,
        in_recovery: bool,
    ) -> Result<ServerArchiving, postgres::Error> {
        let library = if version.at_least(15) {
            "current_setting('archive_library')"
        } else {
            "''"
        };
        let row = client.query_one(
            &format!(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
                 {library}"
            ),
            &[],
        )?;
        Ok(ServerArchiving {
            archive_mode: row.try_get(0)?,
            in_recovery,
            archive_command: row.try_get(1)?,
            archive_library: row.try_get(2)?,
        })
    }

    /// Whether archiving runs on this server at all (a standby archives only with `always`).
    pub fn active(&self) -> bool {
        match self.archive_mode.as_str() {
            "always" => true,
            "on" => !self.in_recovery,
            _ => false,
        }
    }

    /// Does this server archive into `cluster` of the repository at `repo`? Paths are compared
    /// resolved (a link or another spelling of the same folder is the same repository).
    pub fn archives_into(&self, repo: &Path, cluster: &str) -> ArchivesInto {
        let elsewhere = |why: String| ArchivesInto::Elsewhere { why };
        if !self.active() {
            return elsewhere(format!(
                "the server does not archive WAL (archive_mode = {}{})",
                self.archive_mode,
                if self.in_recovery && self.archive_mode == "on" {
                    ", which a standby does not archive with; it needs always"
                } else {
                    ""
                }
            ));
        }
        if !self.archive_library.is_empty() {
            return elsewhere(format!(
                "the server archives with the library {:?}, not with pgsafe archive-push",
                self.archive_library
            ));
        }
        let Some(cmd) = parse_push_command(&self.archive_command) else {
            return elsewhere(format!(
                "archive_command {:?} does not run pgsafe archive-push",
                self.archive_command
            ));
        };
        let (their_repo, their_cluster, from_file) = match fill_from_config(&cmd) {
            Ok(x) => x,
            Err(why) => return elsewhere(why),
        };
        let Some(their_cluster) = their_cluster else {
            return elsewhere(format!(
                "archive_command {:?} names no cluster (no --cluster{})",
                self.archive_command,
                from_file
                    .as_deref()
                    .map(|f| format!(", and {} does not either", f.display()))
                    .unwrap_or_default()
            ));
        };
        let Some(their_repo) = their_repo else {
            return elsewhere(format!(
                "archive_command {:?} names no repository (no --repo, and {})",
                self.archive_command,
                from_file
                    .as_deref()
                    .map(|f| format!("{} has no repo", f.display()))
                    .unwrap_or_else(|| "no config file names one".into())
            ));
        };
        if their_cluster != cluster {
            return elsewhere(format!(
                "archive_command pushes into cluster {their_cluster}, not {cluster}"
            ));
        }
        if !same_folder(&their_repo, repo) {
            return elsewhere(format!(
                "archive_command pushes into the repository {}, not {}",
                their_repo.display(),
                repo.display()
            ));
        }
        ArchivesInto::Repository {
            how: format!(
                "the server archives every WAL file into this repository (archive_mode = {}, \
                 archive_command runs pgsafe archive-push for cluster {cluster}{})",
                self.archive_mode,
                from_file
                    .map(|f| format!(", settings from {}", f.display()))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Fills the repository and cluster a command leaves out from the config file it reads: the
/// one its `--config` names, else the default one. Returns the file read, if any.
#[allow(clippy::type_complexity)]
fn fill_from_config(
    cmd: &PushCommand,
) -> Result<(Option<PathBuf>, Option<String>, Option<PathBuf>), String> {
    if cmd.repo.is_some() && cmd.cluster.is_some() {
        return Ok((cmd.repo.clone(), cmd.cluster.clone(), None));
    }
    let config = crate::config::find(cmd.config.as_deref(), None)
        .map_err(|e| format!("the config file archive_command reads: {e}"))?;
    let Some(config) = config else {
        return Ok((cmd.repo.clone(), cmd.cluster.clone(), None));
    };
    let resolved = crate::config::Resolved::for_cluster(Some(&config), cmd.cluster.as_deref());
    let repo = match &cmd.repo {
        Some(r) => Some(r.clone()),
        None => resolved
            .local_repo()
            .map_err(|e| e.to_string())?
            .map(Path::to_owned),
    };
    // The config file has no default cluster: without --cluster the command names none.
    Ok((repo, cmd.cluster.clone(), Some(config.path.clone())))
}

/// Two paths name the same folder: compared as device and inode when both exist.
fn same_folder(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    match (id(a), id(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The `pgsafe archive-push` invocation in an `archive_command`, split as the shell splits
/// words; `None` when the command runs no such program. Simple commands joined by `&&`, `||`,
/// `;` or `|` (as separate words) are looked at one by one.
pub fn parse_push_command(command: &str) -> Option<PushCommand> {
    let words = shell_words::split(command).ok()?;
    let mut rest = &words[..];
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|w| matches!(w.as_str(), "&&" | "||" | ";" | "|"))
            .unwrap_or(rest.len());
        if let Some(p) = parse_simple(&rest[..end]) {
            return Some(p);
        }
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    None
}

/// One simple command: `[VAR=value…] [exec] …/pgsafe [--config F] archive-push [options] %p`.
fn parse_simple(words: &[String]) -> Option<PushCommand> {
    let mut i = 0;
    while words
        .get(i)
        .is_some_and(|w| w == "exec" || (w.contains('=') && !w.starts_with('-')))
    {
        i += 1;
    }
    let program = words.get(i)?;
    if Path::new(program).file_name()? != "pgsafe" {
        return None;
    }
    let args = &words[i + 1..];
    let mut out = PushCommand::default();
    let mut sub = false;
    let mut k = 0;
    while k < args.len() {
        let a = args[k].as_str();
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_owned())),
            _ => (a, None),
        };
        let mut value = || match &inline {
            Some(v) => Some(v.clone()),
            None => {
                k += 1;
                args.get(k).cloned()
            }
        };
        match key {
            "--repo" => out.repo = Some(PathBuf::from(value()?)),
            "--cluster" => out.cluster = Some(value()?),
            "--config" => out.config = Some(PathBuf::from(value()?)),
            "archive-push" if !sub => sub = true,
            _ if !sub && !a.starts_with('-') => return None,
            _ => {}
        }
        k += 1;
    }
    sub.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: &str, command: &str) -> ServerArchiving {
        ServerArchiving {
            archive_mode: mode.into(),
            in_recovery: false,
            archive_command: command.into(),
            archive_library: String::new(),
        }
    }

    #[test]
    fn push_commands_are_recognised_in_their_usual_forms() {
        let p = parse_push_command("pgsafe archive-push --repo /r --cluster main %p").unwrap();
        assert_eq!(p.repo.as_deref(), Some(Path::new("/r")));
        assert_eq!(p.cluster.as_deref(), Some("main"));
        let p = parse_push_command(
            "'/usr/local/bin/pgsafe' --config=/etc/x.toml archive-push --cluster=db1 \"%p\"",
        )
        .unwrap();
        assert_eq!(p.config.as_deref(), Some(Path::new("/etc/x.toml")));
        assert_eq!(p.cluster.as_deref(), Some("db1"));
        assert_eq!(p.repo, None);
        let p = parse_push_command(
            "test -d /r && PGSAFE_LOG=1 exec /opt/pgsafe archive-push --repo '/a b' --cluster c %p",
        )
        .unwrap();
        assert_eq!(p.repo.as_deref(), Some(Path::new("/a b")));
        // Not pgsafe's push.
        for c in [
            "cp %p /archive/%f",
            "pgsafe archive-get --repo /r --cluster c %f %p",
            "pgbackrest --stanza=main archive-push %p",
            "/bin/pgsafe-wrapper archive-push --repo /r --cluster c %p",
            "pgsafe archive-push --repo \"unterminated %p",
            "",
            "(disabled)",
        ] {
            assert_eq!(parse_push_command(c), None, "{c}");
        }
    }

    #[test]
    fn only_a_push_into_this_repository_and_cluster_counts() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&repo, &link).unwrap();
        let cmd = |r: &Path, c: &str| {
            format!(
                "pgsafe archive-push --repo {} --cluster {c} %p",
                r.display()
            )
        };
        let s = settings("on", &cmd(&repo, "main"));
        assert!(s.archives_into(&repo, "main").is_repository());
        // The same folder through a link.
        assert!(s.archives_into(&link, "main").is_repository());
        let other = s.archives_into(&repo, "other");
        assert!(
            other.reason().contains("cluster main, not other"),
            "{other:?}"
        );
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        assert!(!s.archives_into(&elsewhere, "main").is_repository());
        // Archiving off, or a standby with "on", or a library: not archiving there.
        let off = settings("off", "(disabled)").archives_into(&repo, "main");
        assert!(off.reason().contains("archive_mode = off"), "{off:?}");
        let mut standby = settings("on", &cmd(&repo, "main"));
        standby.in_recovery = true;
        assert!(!standby.archives_into(&repo, "main").is_repository());
        standby.archive_mode = "always".into();
        assert!(standby.archives_into(&repo, "main").is_repository());
        let mut lib = settings("on", &cmd(&repo, "main"));
        lib.archive_library = "basic_archive".into();
        assert!(!lib.archives_into(&repo, "main").is_repository());
    }

    #[test]
    fn missing_settings_come_from_the_named_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let file = dir.path().join("pgsafe.toml");
        std::fs::write(&file, format!("repo = {:?}\n", repo.display().to_string())).unwrap();
        let s = settings(
            "on",
            &format!(
                "pgsafe --config {} archive-push --cluster main %p",
                file.display()
            ),
        );
        let got = s.archives_into(&repo, "main");
        assert!(got.is_repository(), "{got:?}");
        assert!(got.reason().contains("pgsafe.toml"), "{got:?}");
        // No cluster anywhere: not into this repository.
        let s = settings(
            "on",
            &format!("pgsafe --config {} archive-push %p", file.display()),
        );
        assert!(!s.archives_into(&repo, "main").is_repository());
    }
}
