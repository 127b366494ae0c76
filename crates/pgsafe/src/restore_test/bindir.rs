//! Finding the server binaries of a backup's major version: the folder given, else the one
//! `pg_config --bindir` names, else every `PATH` entry, else the distributions' layouts. A
//! candidate counts only when its `postgres --version` reports that major: a restore test run
//! with another major's binaries would prove nothing (PostgreSQL refuses a data directory of
//! another major, `ValidatePgVersion` in `src/backend/utils/init/miscinit.c`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where distributions install each major's server binaries (`{}`: the major): Debian and
/// Ubuntu (`postgresql-common`), the PGDG RPMs, and a source build's default prefix with the
/// major in its name.
const LAYOUTS: &[&str] = &[
    "/usr/lib/postgresql/{}/bin",
    "/usr/pgsql-{}/bin",
    "/usr/local/pgsql-{}/bin",
    "/opt/postgresql/{}/bin",
];

/// The server binaries chosen for a restore test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Binaries {
    pub bin_dir: PathBuf,
    /// The version `postgres --version` reports, e.g. `17.6` or `17.6 (Debian 17.6-1)`.
    pub version: String,
    /// How the folder was found: `option`, `pg_config`, `PATH` or `layout`.
    pub found_by: &'static str,
}

/// Why no binaries were found: each folder tried and what was wrong with it.
#[derive(Debug, Clone)]
pub struct NotFound {
    pub tried: Vec<(PathBuf, String)>,
}

/// The major in the output of `postgres --version` (`postgres (PostgreSQL) 17.6 (Debian …)`;
/// 9.6 and older print `9.6.24`, which is not a supported major and yields 9).
pub fn major_of_version_output(out: &str) -> Option<u32> {
    let rest = out.split_once(')').map_or(out, |(_, r)| r).trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Runs `<dir>/postgres --version` (which PostgreSQL answers before its refusal to run as root,
/// `src/backend/main/main.c`); returns the output's version part if it is `major`'s.
fn check_dir(dir: &Path, major: u32) -> Result<String, String> {
    let postgres = dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", postgres.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match major_of_version_output(&text) {
        Some(m) if m == major && out.status.success() => Ok(text
            .split_once(')')
            .map_or(text.as_str(), |(_, v)| v)
            .trim()
            .to_owned()),
        Some(m) => Err(format!("it holds PostgreSQL {m}, not {major}")),
        None => Err(format!("postgres --version printed {text:?}")),
    }
}

/// `pg_config --bindir` of the `pg_config` on `PATH`, if there is one.
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (out.status.success() && !s.is_empty()).then(|| PathBuf::from(s))
}

/// The binaries of `major`: only `explicit` when given (a folder the operator named is never
/// silently replaced by another), else the first match of `pg_config`, `PATH`, [`LAYOUTS`].
pub fn find_binaries(explicit: Option<&Path>, major: u32) -> Result<Binaries, NotFound> {
    let mut tried = Vec::new();
    let mut candidates: Vec<(PathBuf, &'static str)> = Vec::new();
    match explicit {
        Some(d) => candidates.push((d.to_owned(), "option")),
        None => {
            if let Some(d) = pg_config_bindir() {
                candidates.push((d, "pg_config"));
            }
            if let Some(path) = std::env::var_os("PATH") {
                for d in std::env::split_paths(&path).filter(|d| d.is_absolute()) {
                    if d.join("postgres").is_file() {
                        candidates.push((d, "PATH"));
                    }
                }
            }
            for l in LAYOUTS {
                candidates.push((PathBuf::from(l.replace("{}", &major.to_string())), "layout"));
            }
        }
    }
    for (dir, found_by) in candidates {
        if tried.iter().any(|(d, _)| *d == dir) {
            continue;
        }
        if explicit.is_none() && !dir.join("postgres").exists() {
            tried.push((dir, "no postgres there".to_owned()));
            continue;
        }
        match check_dir(&dir, major) {
            Ok(version) => {
                return Ok(Binaries {
                    bin_dir: dir,
                    version,
                    found_by,
                });
            }
            Err(why) => tried.push((dir, why)),
        }
    }
    Err(NotFound { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_of_version_lines() {
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 17.6 (Debian 17.6-1.pgdg12+1)"),
            Some(17)
        );
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 10.23"),
            Some(10)
        );
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 18beta1"),
            Some(18)
        );
        assert_eq!(
            major_of_version_output("postgres (PostgreSQL) 9.6.24"),
            Some(9)
        );
        assert_eq!(major_of_version_output(""), None);
        assert_eq!(major_of_version_output("garbage)"), None);
    }

    #[test]
    fn a_named_folder_without_postgres_is_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let e = find_binaries(Some(d.path()), 17).unwrap_err();
        assert_eq!(e.tried.len(), 1);
        assert_eq!(e.tried[0].0, d.path());
        assert!(e.tried[0].1.contains("cannot run"), "{:?}", e.tried);
    }
}
