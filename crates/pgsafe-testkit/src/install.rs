//! Where the PostgreSQL binaries are: one folder per major installed by `scripts/install-postgres`,
//! plus the Debian PostgreSQL 15 client tools.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use pgsafe::PgVersion;

use crate::fsx;
use crate::user::server_user;

const INSTALL_HINT: &str = "run `scripts/install-postgres` from the repository root";
const CLIENT_MAJOR: u32 = 15;

/// The server binaries (`initdb`, `postgres`, `pg_ctl`) of one PostgreSQL major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInstall {
    pub major: u32,
    /// Major and minor, e.g. 15.18.
    pub version: PgVersion,
    /// The folder holding `initdb` and `postgres`.
    pub bin_dir: PathBuf,
    /// The install folder (`<bin_dir>/..`: `bin`, `lib`, `share`).
    pub root: PathBuf,
    /// The exact npm package version from the `.installed` stamp, e.g. `15.18.0-beta.17`; `None`
    /// for an install without a stamp (only accepted under `$PGSAFE_PG_DIR`).
    pub package_version: Option<String>,
}

impl PgInstall {
    /// Every major pgsafe supports, oldest first: 10..=18.
    pub fn supported_majors() -> [u32; 9] {
        std::array::from_fn(|i| PgVersion::MIN_SUPPORTED_MAJOR + i as u32)
    }

    /// The folder holding one sub-folder per major: `$PGSAFE_PG_DIR`, else `<repo>/.pg`.
    pub fn pg_dir() -> PathBuf {
        match std::env::var_os("PGSAFE_PG_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => repo_root().join(".pg"),
        }
    }

    /// Every supported major installed in [`PgInstall::pg_dir`], oldest first.
    pub fn all() -> Vec<PgInstall> {
        let dir = Self::pg_dir();
        Self::supported_majors()
            .into_iter()
            .filter_map(|m| Self::find_in(&dir, m).ok())
            .collect()
    }

    /// The install of `major`; panics, naming `scripts/install-postgres`, when it is missing.
    /// Tests use this so that a missing major fails loudly instead of being skipped.
    pub fn major(major: u32) -> PgInstall {
        match Self::find_in(&Self::pg_dir(), major) {
            Ok(i) => i,
            Err(why) => panic!("PostgreSQL {major} is not installed: {why}; {INSTALL_HINT}"),
        }
    }

    /// The install of `major` under `pg_dir` (`<pg_dir>/<major>/bin/postgres`), or why not.
    pub fn find_in(pg_dir: &Path, major: u32) -> Result<PgInstall, String> {
        if !Self::supported_majors().contains(&major) {
            return Err(format!("{major} is not a supported major (10..=18)"));
        }
        let root = pg_dir.join(major.to_string());
        let bin_dir = root.join("bin");
        for tool in ["postgres", "initdb"] {
            let p = bin_dir.join(tool);
            let ok = p
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !matches!(ok, Ok(true)) {
                return Err(format!("{} is missing or not executable", p.display()));
            }
        }
        let stamp = root.join(".installed");
        let package_version = match std::fs::read_to_string(&stamp) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", stamp.display())),
        };
        let version = match &package_version {
            Some(pkg) => version_from_package(pkg).ok_or_else(|| {
                format!("{} holds {pkg:?}, not a package version", stamp.display())
            })?,
            None if std::env::var_os("PGSAFE_PG_DIR").is_some() => {
                version_from_binary(&bin_dir.join("postgres"))?
            }
            None => {
                return Err(format!(
                    "{} is missing (the install is incomplete)",
                    stamp.display()
                ));
            }
        };
        if version.major() != major {
            return Err(format!(
                "{} holds PostgreSQL {version}, not {major}",
                root.display()
            ));
        }
        Ok(PgInstall {
            major,
            version,
            bin_dir,
            root,
            package_version,
        })
    }

    /// Path of one of this install's programs (`initdb`, `postgres`, `pg_ctl`).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin_dir.join(program)
    }

    /// A bin folder the server user can execute from. That is [`PgInstall::bin_dir`] unless the
    /// tests run as root and the repository lies below a folder other users cannot enter (e.g.
    /// `/root`): then a copy of the install in the shared temp folder.
    pub(crate) fn server_bin_dir(&self) -> PathBuf {
        if server_user().is_current || traversable_by_others(&self.root) {
            return self.bin_dir.clone();
        }
        static MIRRORS: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
        let mut mirrors = MIRRORS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = mirrors.iter().find(|(r, _)| *r == self.root) {
            return m.join("bin");
        }
        let tag = self
            .package_version
            .clone()
            .unwrap_or_else(|| self.version.to_string());
        let dest = fsx::shared_cache_dir().join(format!("pg-{}-{tag}", self.major));
        fsx::build_once(&dest, |tmp| {
            for sub in ["bin", "lib", "share"] {
                fsx::copy_tree(&self.root.join(sub), &tmp.join(sub), None).unwrap_or_else(|e| {
                    panic!("copying {} to {}: {e}", self.root.display(), tmp.display())
                });
            }
            fsx::make_world_readable(tmp);
        });
        mirrors.push((self.root.clone(), dest.clone()));
        dest.join("bin")
    }
}

/// `15.18.0-beta.17` -> 15.18.
fn version_from_package(pkg: &str) -> Option<PgVersion> {
    let mut it = pkg.split(['.', '-']);
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    PgVersion::from_num(major * 10000 + minor).ok()
}

/// Runs `postgres --version` (`postgres (PostgreSQL) 15.18 ...`).
fn version_from_binary(postgres: &Path) -> Result<PgVersion, String> {
    let out = Command::new(postgres)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", postgres.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| format!("{} --version printed {text:?}", postgres.display()))?;
    let digits: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .trim_end_matches('.')
        .parse()
        .map_err(|e| format!("{} --version printed {text:?}: {e}", postgres.display()))
}

/// True if every folder from `/` down to `path` lets other users through (mode o+x).
fn traversable_by_others(path: &Path) -> bool {
    path.ancestors()
        .all(|p| p.metadata().map(|m| m.mode() & 0o001 != 0).unwrap_or(false))
}

/// The repository root: the first folder above this crate's manifest holding
/// `scripts/install-postgres` (falling back to two levels up: `crates/pgsafe-testkit/../..`).
pub fn repo_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .find(|d| d.join("scripts").join("install-postgres").is_file())
            .or_else(|| manifest.ancestors().nth(2))
            .unwrap_or(manifest)
            .to_path_buf()
    })
    .clone()
}

/// The Debian PostgreSQL 15 client tools folder (`pg_basebackup`, `pg_verifybackup`,
/// `pg_controldata`, `pg_waldump`, `pgbench`, `psql`, ...): `$PGSAFE_CLIENT_BIN_DIR`, else
/// `/usr/lib/postgresql/15/bin`. Panics with an install hint when it is missing.
pub fn client_bin_dir() -> PathBuf {
    let dir = match std::env::var_os("PGSAFE_CLIENT_BIN_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(format!("/usr/lib/postgresql/{CLIENT_MAJOR}/bin")),
    };
    for tool in [
        "pg_basebackup",
        "pg_verifybackup",
        "pg_controldata",
        "pg_waldump",
    ] {
        if !dir.join(tool).is_file() {
            panic!(
                "the PostgreSQL {CLIENT_MAJOR} client tools are not installed ({} is missing); \
                 {INSTALL_HINT} (it installs Debian's postgresql-{CLIENT_MAJOR} and \
                 postgresql-client-{CLIENT_MAJOR})",
                dir.join(tool).display()
            );
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions_map_to_server_versions() {
        assert_eq!(
            version_from_package("15.18.0-beta.17").unwrap().to_string(),
            "15.18"
        );
        assert_eq!(
            version_from_package("10.23.0-beta.6").unwrap().num(),
            100023
        );
        assert_eq!(
            version_from_package("18.4.0-beta.17").unwrap().num(),
            180004
        );
        assert!(version_from_package("banana").is_none());
    }

    #[test]
    fn supported_majors_are_10_to_18() {
        assert_eq!(
            PgInstall::supported_majors(),
            [10, 11, 12, 13, 14, 15, 16, 17, 18]
        );
    }

    #[test]
    fn a_missing_major_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = PgInstall::find_in(empty.path(), 14).unwrap_err();
        assert!(err.contains("bin/postgres is missing"), "{err}");
        assert!(repo_root().join("scripts/install-postgres").is_file());
    }
}
