//! Where does the server archive its WAL: into which pgsafe repository and cluster?
//!
//! A backup into a repository need not copy WAL when the server already archives into that
//! repository's cluster (README "Backups whose WAL is in the repository's archive"), and
//! `pgsafe check` explains archiving that does not go there. Both ask this module.
//!
//! The server archives with `archive_command` when `archive_mode` is `on` (a primary) or
//! `always` (also a standby) and `archive_library` (15+) is empty
//! (src/backend/postmaster/pgarch.c; `XLogArchivingActive`/`XLogArchivingAlways` in
//! src/include/access/xlog.h). The command is read by [`super::archive_command`] (the one
//! reader, `pgsafe check`'s too); it archives into pgsafe when it runs a program named `pgsafe`
//! with the subcommand `archive-push` and nothing else whose exit status could stand in for
//! pgsafe's (`… || true` reports WAL archived that is not). Its `--repo` and `--cluster` name
//! the repository; missing ones come from the config file the command names (`--config`), else
//! one a `PGSAFE_CONFIG=` in front of it names, else the default file (README "Config file")
//! — the variable `PGSAFE_CONFIG` of the server's own environment cannot be seen from here, and the reason says which file was read. Anything
//! pgsafe cannot read this way (shell variables, a wrapper script) is "not into this
//! repository", never guessed: the backup then includes its WAL, which is always safe.

use std::path::{Path, PathBuf};

use postgres::Client;

use super::archive_command::{self, Parsed, PushCall};
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
        let call = match archive_command::parse(&self.archive_command) {
            Parsed::Push { compound: true, .. } => {
                return elsewhere(format!(
                    "archive_command {:?} runs pgsafe archive-push among other shell commands, \
                     so its exit status may not be pgsafe's: WAL the server counts as archived \
                     may not be in the repository",
                    self.archive_command
                ));
            }
            Parsed::Push { call, .. } => call,
            _ => {
                return elsewhere(format!(
                    "archive_command {:?} does not run pgsafe archive-push",
                    self.archive_command
                ));
            }
        };
        let (their_repo, their_cluster, from_file) = match fill_from_config(&call) {
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
/// one its `--config` (or a `PGSAFE_CONFIG=` in front of it) names, else the default one.
/// Returns the file read, if any.
#[allow(clippy::type_complexity)]
fn fill_from_config(
    call: &PushCall,
) -> Result<(Option<PathBuf>, Option<String>, Option<PathBuf>), String> {
    let repo = call.repo.as_ref().map(PathBuf::from);
    if repo.is_some() && call.cluster.is_some() {
        return Ok((repo, call.cluster.clone(), None));
    }
    let named = call
        .config
        .as_ref()
        .or(call.config_env.as_ref())
        .map(Path::new);
    let config = crate::config::find(named, None)
        .map_err(|e| format!("the config file archive_command reads: {e}"))?;
    let Some(config) = config else {
        return Ok((repo, call.cluster.clone(), None));
    };
    let resolved = crate::config::Resolved::for_cluster(Some(&config), call.cluster.as_deref());
    let repo = match (repo, &resolved.repo) {
        (Some(r), _) => Some(r),
        // An object store location, compared as written.
        (None, Some(crate::config::RepoLocation::Remote(url))) => Some(PathBuf::from(url)),
        (None, _) => resolved
            .local_repo()
            .map_err(|e| e.to_string())?
            .map(Path::to_owned),
    };
    // The config file has no default cluster: without --cluster the command names none.
    Ok((repo, call.cluster.clone(), Some(config.path.clone())))
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
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("a b");
        std::fs::create_dir(&repo).unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, format!("repo = {:?}\n", repo.display().to_string())).unwrap();
        let r = repo.display();
        let f = file.display();
        for c in [
            format!("pgsafe archive-push --repo '{r}' --cluster main %p"),
            format!("'/usr/local/bin/pgsafe' --config={f} archive-push --cluster=main \"%p\""),
            format!("PGSAFE_CONFIG={f} /opt/pgsafe archive-push --cluster main %p"),
        ] {
            let got = settings("on", &c).archives_into(&repo, "main");
            assert!(got.is_repository(), "{c}: {got:?}");
        }
        // Not pgsafe's push, or one whose exit status may not be pgsafe's.
        for c in [
            "cp %p /archive/%f".to_owned(),
            format!("pgsafe archive-get --repo '{r}' --cluster main %f %p"),
            "pgbackrest --stanza=main archive-push %p".to_owned(),
            format!("/bin/pgsafe-wrapper archive-push --repo '{r}' --cluster main %p"),
            "pgsafe archive-push --repo \"unterminated %p".to_owned(),
            format!("pgsafe archive-push --repo '{r}' --cluster main %p || true"),
            format!("test -d '{r}' && pgsafe archive-push --repo '{r}' --cluster main %p"),
            String::new(),
            "(disabled)".to_owned(),
        ] {
            let got = settings("on", &c).archives_into(&repo, "main");
            assert!(!got.is_repository(), "{c}: {got:?}");
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
