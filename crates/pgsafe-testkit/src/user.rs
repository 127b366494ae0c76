//! The OS user the test servers run as. PostgreSQL refuses to run as root; CI runs as root.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User, getegid, geteuid};

/// Default name of the unprivileged user created when the tests run as root.
pub const DEFAULT_SERVER_USER: &str = "pgsafe-test";

/// Who runs `initdb` and `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// True when that is the test process's own user (not root): no privilege change, no chown.
    pub is_current: bool,
}

impl ServerUser {
    /// Gives `path` (not following a symlink) to the server user; a no-op when not root.
    pub fn chown(&self, path: &Path) {
        if self.is_current {
            return;
        }
        std::os::unix::fs::lchown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw()))
            .unwrap_or_else(|e| panic!("chown {} to {}: {e}", path.display(), self.name));
    }

    /// Makes `cmd` run as the server user (when the test process is root).
    pub fn apply(&self, cmd: &mut Command) {
        if !self.is_current {
            use std::os::unix::process::CommandExt;
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
    }
}

/// The server user: the current user when not root; as root, `$PGSAFE_TEST_USER` or
/// `pgsafe-test`, created (system user, no home, no login shell) if it does not exist yet.
pub fn server_user() -> &'static ServerUser {
    static USER: OnceLock<ServerUser> = OnceLock::new();
    USER.get_or_init(|| {
        let euid = geteuid();
        if !euid.is_root() {
            let name = User::from_uid(euid).ok().flatten().map(|u| u.name);
            return ServerUser {
                name: name.unwrap_or_else(|| euid.to_string()),
                uid: euid,
                gid: getegid(),
                is_current: true,
            };
        }
        let name = std::env::var("PGSAFE_TEST_USER")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVER_USER.to_owned());
        let user = find_or_create(&name);
        if user.uid.is_root() {
            panic!("server user {name:?} has uid 0; PostgreSQL refuses to run as root");
        }
        ServerUser {
            name,
            uid: user.uid,
            gid: user.gid,
            is_current: false,
        }
    })
}

fn lookup(name: &str) -> Option<User> {
    User::from_name(name).unwrap_or_else(|e| panic!("looking up user {name:?}: {e}"))
}

fn find_or_create(name: &str) -> User {
    if let Some(u) = lookup(name) {
        return u;
    }
    // Several test processes may get here at once: serialise on a lock file, re-check, and treat
    // "already exists" as success. useradd itself fails (exit 10) while another holds /etc/passwd.
    let lock_path = std::env::temp_dir().join("pgsafe-testkit-useradd.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", lock_path.display()));
    for attempt in 0..20 {
        if let Some(u) = lookup(name) {
            return u;
        }
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"])
            .args(["--comment", "pgsafe test servers", name])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "the tests run as root, so PostgreSQL needs an unprivileged user, but running \
                     `useradd {name}` failed: {e}; create the user yourself or set PGSAFE_TEST_USER"
                )
            });
        match out.status.code() {
            Some(0) | Some(9) => {} // 9: the name is already taken: someone else created it
            Some(10) if attempt < 19 => std::thread::sleep(Duration::from_millis(100)), // passwd busy
            _ => panic!(
                "useradd {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }
    lookup(name).unwrap_or_else(|| panic!("user {name:?} still missing after useradd"))
}
