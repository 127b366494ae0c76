//! What an `archive_command` runs, read from its text (pure): whether it calls
//! `pgsafe archive-push`, with which repository, cluster and config file, and whether its exit
//! status is pgsafe's own.
//!
//! PostgreSQL replaces `%p`, `%f` and `%%` in the command and runs the result with `sh -c` in
//! the data directory (`shell_archive_file` in src/backend/archive/shell_archive.c, 15+;
//! `pgarch_archiveXlog` in src/backend/postmaster/pgarch.c before), and counts the file as
//! archived exactly when the command exits 0. So a command whose last word is `|| true`, or
//! that runs pgsafe in a pipeline, can report WAL as archived that is not: such a command is
//! "compound" here: `check` says so, and a backup does not rely on such archiving
//! ([`super::archive_target`]).

/// A `pgsafe … archive-push …` invocation found in an `archive_command`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCall {
    /// The word that runs pgsafe, as written (`pgsafe`, `/usr/local/bin/pgsafe`).
    pub program: String,
    /// `--repo`, as written (relative paths resolve against the data directory, where the
    /// archiver runs the command).
    pub repo: Option<String>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--config` (before or after the subcommand: it is a global option).
    pub config: Option<String>,
    /// `PGSAFE_CONFIG=…` set in front of the program (`env PGSAFE_CONFIG=… pgsafe …`).
    pub config_env: Option<String>,
    /// The command passes `%p` (the path of the file to archive).
    pub has_path: bool,
}

/// What the text of an `archive_command` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Empty: nothing is archived (the archiver waits, and WAL piles up in `pg_wal`).
    Empty,
    /// The shell could not parse it either (unbalanced quotes).
    Unparsable,
    /// It runs pgsafe with another subcommand (or none).
    OtherSubcommand { program: String, subcommand: String },
    /// It does not run pgsafe: `program` is the first word.
    NotPgsafe { program: String },
    /// It runs `pgsafe archive-push`. `compound`: the command has shell operators (`;`, `&&`,
    /// `||`, `|`, `&`, redirections, substitutions), so its exit status may not be pgsafe's.
    Push { call: PushCall, compound: bool },
}

/// The base name of a program word: `pgsafe` for `/usr/local/bin/pgsafe`.
fn base_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Whether `cmd` has shell syntax beyond plain words: an operator or substitution outside
/// quotes (`$(…)` and backquotes count inside double quotes too).
pub fn is_compound(cmd: &str) -> bool {
    let mut single = false;
    let mut double = false;
    let mut escaped = false;
    let mut prev = ' ';
    for c in cmd.chars() {
        if escaped {
            escaped = false;
            prev = c;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '`' if !single => return true,
            '(' if !single && prev == '$' => return true,
            ';' | '&' | '|' | '<' | '>' | '\n' | '(' | ')' if !single && !double => return true,
            _ => {}
        }
        prev = c;
    }
    false
}

/// A `NAME=value` word in front of a program (an environment assignment).
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

/// A word as the archiver runs it: `%%` is a literal `%` (`%p` and `%f` are left as they are).
fn unescape_percent(word: &str) -> String {
    word.replace("%%", "%")
}

/// An option's value: `--name value` or `--name=value`; advances `i` past what it used.
fn option_value(words: &[String], i: &mut usize, name: &str) -> Option<Option<String>> {
    let w = &words[*i];
    if let Some(v) = w.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
        return Some(Some(unescape_percent(v)));
    }
    if w == name {
        *i += 1;
        return Some(words.get(*i).map(|v| unescape_percent(v)));
    }
    None
}

/// Global options (besides `--config`) that take their value in the next word: how to reach
/// an object store.
const GLOBAL_VALUE_OPTIONS: [&str; 8] = [
    "--s3-retry-budget",
    "--s3-endpoint",
    "--s3-region",
    "--s3-credentials-file",
    "--s3-profile",
    "--s3-access-key-id-env",
    "--s3-secret-access-key-env",
    "--s3-session-token-env",
];

/// Reads an `archive_command` (as the server shows it; `%p` and `%f` not yet replaced).
pub fn parse(cmd: &str) -> Parsed {
    if cmd.trim().is_empty() {
        return Parsed::Empty;
    }
    let Ok(words) = shell_words::split(cmd) else {
        return Parsed::Unparsable;
    };
    let Some(first) = words.first() else {
        return Parsed::Empty;
    };
    let Some(at) = words.iter().position(|w| base_name(w) == "pgsafe") else {
        return Parsed::NotPgsafe {
            program: first.clone(),
        };
    };
    let mut call = PushCall {
        program: unescape_percent(&words[at]),
        ..PushCall::default()
    };
    call.config_env = words[..at]
        .iter()
        .filter_map(|w| assignment(w))
        .filter(|(n, _)| *n == "PGSAFE_CONFIG")
        .map(|(_, v)| v.to_owned())
        .next_back();
    let mut subcommand: Option<String> = None;
    let mut i = at + 1;
    while i < words.len() {
        if let Some(v) = option_value(&words, &mut i, "--config") {
            call.config = v;
        } else if subcommand.is_none() {
            if GLOBAL_VALUE_OPTIONS.contains(&words[i].as_str()) {
                // A global option's value is not the subcommand.
                i += 1;
            } else if !words[i].starts_with('-') {
                subcommand = Some(words[i].clone());
            }
        } else if let Some(v) = option_value(&words, &mut i, "--repo") {
            call.repo = v;
        } else if let Some(v) = option_value(&words, &mut i, "--cluster") {
            call.cluster = v;
        } else if words[i].replace("%%", "").contains("%p") {
            call.has_path = true;
        }
        i += 1;
    }
    match subcommand.as_deref() {
        Some("archive-push") => Parsed::Push {
            call,
            compound: is_compound(cmd),
        },
        other => Parsed::OtherSubcommand {
            program: call.program,
            subcommand: other.unwrap_or_default().to_owned(),
        },
    }
}

/// One shell word, quoted only when it needs to be.
pub fn shell_word(s: &str) -> String {
    shell_words::quote(s).into_owned()
}

/// The `archive_command` that archives into `repo` as `cluster` with `program` (a `%` in a
/// value is written `%%`, which the archiver turns back into `%`).
pub fn expected_command(program: &str, repo: &str, cluster: &str) -> String {
    expected_command_with(program, repo, cluster, &[])
}

/// [`expected_command`] with `extra` arguments after the cluster.
pub fn expected_command_with(program: &str, repo: &str, cluster: &str, extra: &[String]) -> String {
    let word = |s: &str| shell_word(&s.replace('%', "%%"));
    let mut cmd = format!(
        "{} archive-push --repo {} --cluster {}",
        word(program),
        word(repo),
        word(cluster)
    );
    for a in extra {
        cmd.push(' ');
        cmd.push_str(&word(a));
    }
    cmd.push_str(" %p");
    cmd
}

/// A string as a postgresql.conf (and SQL) literal: single quotes, `'` doubled.
pub fn conf_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(cmd: &str) -> (PushCall, bool) {
        match parse(cmd) {
            Parsed::Push { call, compound } => (call, compound),
            other => panic!("{cmd:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_push_is_read() {
        let (c, compound) = push("pgsafe archive-push --repo /var/lib/pgsafe --cluster main %p");
        assert!(!compound);
        assert_eq!(c.program, "pgsafe");
        assert_eq!(c.repo.as_deref(), Some("/var/lib/pgsafe"));
        assert_eq!(c.cluster.as_deref(), Some("main"));
        assert!(c.has_path);
        assert_eq!(c.config, None);
    }

    #[test]
    fn forms_of_options_and_quoting() {
        let (c, _) = push(
            "'/opt/my tools/pgsafe' --config=/etc/x.toml archive-push --cluster=main \
             --repo '/srv/back ups' \"%p\"",
        );
        assert_eq!(c.program, "/opt/my tools/pgsafe");
        assert_eq!(c.config.as_deref(), Some("/etc/x.toml"));
        assert_eq!(c.repo.as_deref(), Some("/srv/back ups"));
        assert_eq!(c.cluster.as_deref(), Some("main"));
        assert!(c.has_path);
        let (c, _) = push("env PGSAFE_CONFIG=/etc/p.toml pgsafe archive-push --cluster m %p");
        assert_eq!(c.config_env.as_deref(), Some("/etc/p.toml"));
        assert_eq!(c.repo, None);
        // %f alone does not name the file's path.
        let (c, _) = push("pgsafe archive-push --repo /r --cluster m %f");
        assert!(!c.has_path);
        // Object storage options before the subcommand are not taken for it.
        let (c, _) = push(
            "pgsafe --s3-endpoint http://127.0.0.1:9000 --s3-path-style archive-push \
             --repo s3://b/p --cluster m --s3-region r %p",
        );
        assert_eq!(c.repo.as_deref(), Some("s3://b/p"));
        assert!(c.has_path);
        // --config after the subcommand is the global option too.
        let (c, _) = push("pgsafe archive-push --config /c.toml --cluster m %p");
        assert_eq!(c.config.as_deref(), Some("/c.toml"));
    }

    #[test]
    fn compound_commands_are_noticed() {
        for cmd in [
            "pgsafe archive-push --repo /r --cluster m %p || true",
            "pgsafe archive-push --repo /r --cluster m %p; exit 0",
            "pgsafe archive-push --repo /r --cluster m %p > /dev/null 2>&1",
            "test -f x && pgsafe archive-push --repo /r --cluster m %p",
            "pgsafe archive-push --repo $(cat /etc/r) --cluster m %p",
            "pgsafe archive-push --repo \"`cat /etc/r`\" --cluster m %p",
        ] {
            assert!(push(cmd).1, "{cmd}");
        }
        for cmd in [
            "pgsafe archive-push --repo '/a;b|c' --cluster m %p",
            "pgsafe archive-push --repo \"/a&b\" --cluster m %p",
            "pgsafe archive-push --repo /a\\;b --cluster m %p",
        ] {
            assert!(!push(cmd).1, "{cmd}");
        }
    }

    #[test]
    fn other_commands() {
        assert_eq!(parse(""), Parsed::Empty);
        assert_eq!(parse("   "), Parsed::Empty);
        assert_eq!(parse("cp '%p"), Parsed::Unparsable);
        assert_eq!(
            parse("test ! -f /mnt/server/archivedir/%f && cp %p /mnt/server/archivedir/%f"),
            Parsed::NotPgsafe {
                program: "test".into()
            }
        );
        assert_eq!(
            parse("/usr/bin/pgsafe archive-get --repo /r --cluster m %f %p"),
            Parsed::OtherSubcommand {
                program: "/usr/bin/pgsafe".into(),
                subcommand: "archive-get".into()
            }
        );
        // A program merely named like pgsafe is not pgsafe.
        assert!(matches!(
            parse("pgsafe-wrapper archive-push %p"),
            Parsed::NotPgsafe { .. }
        ));
    }

    #[test]
    fn the_expected_command_reads_back() {
        let cmd = expected_command("/usr/local/bin/pgsafe", "/srv/back ups/it's", "main");
        let (c, compound) = push(&cmd);
        assert!(!compound);
        assert_eq!(c.program, "/usr/local/bin/pgsafe");
        assert_eq!(c.repo.as_deref(), Some("/srv/back ups/it's"));
        assert_eq!(c.cluster.as_deref(), Some("main"));
        assert!(c.has_path);
        assert_eq!(conf_literal("a 'b'"), "'a ''b'''");
        // A % in a path is doubled, so the archiver does not take it for %p.
        let cmd = expected_command("pgsafe", "/srv/50%p", "main");
        assert!(cmd.contains("/srv/50%%p"), "{cmd}");
        assert_eq!(push(&cmd).0.repo.as_deref(), Some("/srv/50%p"));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
            let _ = is_compound(&s);
        }

        #[test]
        fn any_repo_path_round_trips(repo in "/[^\\x00]{0,40}", cluster in "[a-z][a-z0-9_.-]{0,10}") {
            let cmd = expected_command("pgsafe", &repo, &cluster);
            match parse(&cmd) {
                Parsed::Push { call, .. } => {
                    proptest::prop_assert_eq!(call.repo.as_deref(), Some(repo.as_str()));
                    proptest::prop_assert_eq!(call.cluster.as_deref(), Some(cluster.as_str()));
                    proptest::prop_assert!(call.has_path);
                }
                other => proptest::prop_assert!(false, "{:?}", other),
            }
        }
    }
}
