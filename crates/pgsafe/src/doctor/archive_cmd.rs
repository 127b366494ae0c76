//! Where does a copied `archive_command` / `restore_command` keep the WAL archive? Pure: reads
//! the command text only.
//!
//! doctor uses the WAL archive as evidence (backup history files, WAL written after these
//! files were captured; see `evidence.rs`), so it must find it from the configuration that
//! came with the directory. Only local forms are interpreted — `cp %p /dir/%f`,
//! `test ! -f /dir/%f && cp %p /dir/%f`, `rsync`/`install` variants, compressors writing
//! `/dir/%f.gz` — and everything else (remote copies, shell variables, backup tools with their
//! own repository) is reported as "cannot interpret", never guessed. `%f` and `%p` are
//! PostgreSQL's placeholders (src/backend/access/transam/xlogarchive.c, `BuildRestoreCommand`
//! in src/common/archive.c).

use std::path::PathBuf;

/// A local directory the command copies `%f` into (or from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDir {
    pub dir: PathBuf,
    /// What follows `%f` in the archived name (`""`, `".gz"`, `".zst"` …).
    pub suffix: String,
}

/// Programs whose `/dir/%f` argument is the archived file itself.
const KNOWN_PROGRAMS: &[&str] = &[
    "cp", "rsync", "install", "test", "[", "gzip", "pigz", "zstd", "lz4", "xz", "bzip2", "cat",
    "ln", "dd",
];

/// Tools that keep WAL in a repository of their own: named in the explanation.
const TOOLS: &[&str] = &[
    "pgbackrest",
    "wal-g",
    "barman-wal-archive",
    "barman-cloud-wal-archive",
    "barman-wal-restore",
    "wal-e",
    "pg_probackup",
    "pgsafe",
];

const SUFFIXES: &[&str] = &["", ".gz", ".zst", ".lz4", ".xz", ".bz2"];

/// Splits a shell command into simple commands (at unquoted `&&`, `||`, `;`, `|`) of words
/// (quotes removed; `<` and `>` are words of their own). `None` for constructs pgsafe does
/// not follow (`$`, backquotes, unterminated quotes).
fn split(cmd: &str) -> Option<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    let flush = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => word.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => word.push(chars.next()?),
                        x => word.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            '$' | '`' => return None,
            c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut words),
            '<' | '>' => {
                flush(&mut word, &mut in_word, &mut words);
                words.push(c.to_string());
            }
            '&' | '|' | ';' => {
                flush(&mut word, &mut in_word, &mut words);
                if matches!(chars.peek(), Some('&') | Some('|')) {
                    chars.next();
                }
                out.push(std::mem::take(&mut words));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush(&mut word, &mut in_word, &mut words);
    out.push(words);
    Some(out.into_iter().filter(|w| !w.is_empty()).collect())
}

/// The program of a simple command, skipping `VAR=value` assignments and `sudo`/`env`.
fn program(words: &[String]) -> Option<&str> {
    let mut it = words.iter().map(String::as_str);
    loop {
        let w = it.next()?;
        if w.contains('=') && !w.starts_with('/') {
            continue;
        }
        let base = w.rsplit('/').next().unwrap_or(w);
        if base == "env" || base == "nice" {
            continue;
        }
        return Some(base);
    }
}

/// Interprets an `archive_command` or `restore_command`: the local directory holding `%f`,
/// or why pgsafe cannot tell.
pub fn archive_dir_of(cmd: &str) -> Result<ArchiveDir, String> {
    let Some(parts) = split(cmd) else {
        return Err(
            "it uses shell variables, command substitution or unbalanced quotes, which pgsafe \
             does not evaluate"
                .into(),
        );
    };
    let mut found: Option<ArchiveDir> = None;
    for words in &parts {
        if let Some(tool) = program(words).filter(|p| TOOLS.contains(p)) {
            return Err(format!(
                "it runs {tool}, which keeps WAL in a repository of its own that pgsafe does not \
                 read"
            ));
        }
    }
    for words in &parts {
        let with_f: Vec<&String> = words.iter().filter(|w| w.contains("%f")).collect();
        if with_f.is_empty() {
            continue;
        }
        let prog = program(words).unwrap_or("");
        if !KNOWN_PROGRAMS.contains(&prog) {
            return Err(format!(
                "it runs `{prog}`, whose arguments pgsafe cannot interpret as a local directory"
            ));
        }
        for w in with_f {
            let Some((dir, rest)) = w.rsplit_once("/%f") else {
                return Err(format!("`{w}` is not of the form /directory/%f"));
            };
            if !dir.starts_with('/') {
                return Err(format!(
                    "`{w}` is not an absolute local path (a remote host, or relative to the \
                     server's working directory)"
                ));
            }
            if dir.contains('%') || dir.contains('*') || dir.contains('~') {
                return Err(format!("`{w}` has placeholders in its directory part"));
            }
            if !SUFFIXES.contains(&rest) {
                return Err(format!("`{w}`: unknown name suffix {rest:?}"));
            }
            let this = ArchiveDir {
                dir: PathBuf::from(dir),
                suffix: rest.to_owned(),
            };
            match &found {
                Some(f) if f.dir != this.dir => {
                    return Err(format!(
                        "it names two directories ({} and {})",
                        f.dir.display(),
                        this.dir.display()
                    ));
                }
                Some(f) if f.suffix.is_empty() => found = Some(this),
                Some(_) => {}
                None => found = Some(this),
            }
        }
    }
    found.ok_or_else(|| "it does not name %f in a local directory".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(cmd: &str) -> (String, String) {
        let d = archive_dir_of(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        (d.dir.display().to_string(), d.suffix)
    }

    #[test]
    fn local_forms() {
        let plain = ("/arch".to_owned(), String::new());
        assert_eq!(dir("cp %p /arch/%f"), plain);
        assert_eq!(dir("test ! -f /arch/%f && cp %p /arch/%f"), plain);
        assert_eq!(dir("test ! -f '/arch/%f' && cp %p '/arch/%f'"), plain);
        assert_eq!(dir("cp \"%p\" \"/arch/%f\""), plain);
        assert_eq!(dir("/bin/cp /arch/%f %p"), plain);
        assert_eq!(dir("rsync -a %p /arch/%f"), plain);
        assert_eq!(dir("install -m 0600 %p /arch/%f"), plain);
        assert_eq!(
            dir("gzip < %p > /arch/%f.gz"),
            ("/arch".to_owned(), ".gz".to_owned())
        );
        assert_eq!(
            dir("test ! -f '/tmp/pgsafe-x/%f' && cp %p '/tmp/pgsafe-x/%f'"),
            ("/tmp/pgsafe-x".to_owned(), String::new())
        );
        assert_eq!(
            dir("cp '/my arch/%f' %p"),
            ("/my arch".to_owned(), String::new())
        );
    }

    #[test]
    fn what_is_not_interpreted() {
        for cmd in [
            "pgbackrest --stanza=main archive-push %p",
            "scp %p backup:/arch/%f",
            "rsync -a %p host:/arch/%f",
            "cp %p $ARCHIVE/%f",
            "cp %p `cat /etc/dir`/%f",
            "/usr/local/bin/archive.sh %p %f",
            "cp %p arch/%f",
            "cp %p /a/%f && cp %p /b/%f",
            "cp %p '/arch/%f",
            "true",
            "",
        ] {
            let e = archive_dir_of(cmd).unwrap_err();
            assert!(!e.is_empty(), "{cmd}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = archive_dir_of(&s);
        }
    }
}
