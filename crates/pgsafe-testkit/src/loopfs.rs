//! A real btrfs or XFS file system for a test: a sparse image file in [`scratch_root`], attached
//! to a loop device (`losetup -f --show`), formatted (`mkfs.btrfs` / `mkfs.xfs`) and mounted on a
//! private folder. Storage snapshots (btrfs subvolume snapshots, XFS reflink copies) are then the
//! file system's own, not a simulation.
//!
//! Needs root, `/dev/loop-control` and the tools (`btrfs-progs`, `xfsprogs`; scripts/install-postgres
//! installs them). [`LoopFs::or_skip`] says why a test cannot run here and skips it *visibly*
//! (a line on the process's real stderr, not the captured test output), or fails it when
//! `PGSAFE_REQUIRE_LOOP=1` (scripts/test sets it when run as root: there a skip would hide a
//! broken setup).
//!
//! Every name is unique (a temp folder per file system, named with the test process's pid), so
//! tests run in parallel. Dropping a [`LoopFs`] — also while a panic unwinds — unmounts it,
//! detaches the loop device and removes the image; folders left by a killed test process are
//! cleaned up by the next [`LoopFs::new`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::fsx::scratch_root;

/// Folder-name prefix of every loop file system (followed by the creating process's pid).
const PREFIX: &str = "pgsafe-loopfs-";

/// Which file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// Subvolumes and read-only snapshots (`btrfs subvolume snapshot -r`).
    Btrfs,
    /// Reflink copies (`cp --reflink=always`; mkfs.xfs enables reflink by default since 5.1).
    Xfs,
}

impl FsKind {
    fn mkfs(self) -> &'static str {
        match self {
            FsKind::Btrfs => "mkfs.btrfs",
            FsKind::Xfs => "mkfs.xfs",
        }
    }

    /// The tools a test of this kind runs.
    fn tools(self) -> &'static [&'static str] {
        match self {
            FsKind::Btrfs => &["mkfs.btrfs", "btrfs", "losetup", "mount", "umount"],
            FsKind::Xfs => &["mkfs.xfs", "losetup", "mount", "umount"],
        }
    }

    /// The Debian package that has [`FsKind::mkfs`].
    fn package(self) -> &'static str {
        match self {
            FsKind::Btrfs => "btrfs-progs",
            FsKind::Xfs => "xfsprogs",
        }
    }

    fn name(self) -> &'static str {
        match self {
            FsKind::Btrfs => "btrfs",
            FsKind::Xfs => "XFS",
        }
    }
}

/// One mounted loop file system; unmounted and removed on drop.
#[derive(Debug)]
pub struct LoopFs {
    kind: FsKind,
    mount: PathBuf,
    image: PathBuf,
    device: Option<String>,
    mounted: bool,
    // Last: removed after the unmount and detach in Drop::drop.
    _dir: TempDir,
}

impl LoopFs {
    /// Why a file system of `kind` cannot be made here (`None`: it can).
    pub fn unavailable(kind: FsKind) -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("loop devices and mount need root".into());
        }
        if !Path::new("/dev/loop-control").exists() {
            return Some("/dev/loop-control does not exist (no loop device support)".into());
        }
        for tool in kind.tools() {
            if find_tool(tool).is_none() {
                return Some(format!(
                    "{tool} is not installed (Debian package {}; scripts/install-postgres \
                     installs it)",
                    if tool.starts_with("mkfs") || *tool == "btrfs" {
                        kind.package()
                    } else {
                        "util-linux / mount"
                    }
                ));
            }
        }
        None
    }

    /// A fresh file system of `size_mb` MB (sparse: only what is written takes memory), mounted.
    /// XFS needs at least 300 MB.
    pub fn new(kind: FsKind, size_mb: u64) -> Result<LoopFs, String> {
        if let Some(why) = Self::unavailable(kind) {
            return Err(why);
        }
        cleanup_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(scratch_root())
            .map_err(|e| format!("creating a folder in {}: {e}", scratch_root().display()))?;
        // The servers run as an unprivileged user: they must be able to enter the mount point.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
        let image = dir.path().join("image");
        let mount = dir.path().join("mnt");
        let mut lfs = LoopFs {
            kind,
            mount,
            image,
            device: None,
            mounted: false,
            _dir: dir,
        };
        fs::File::create(&lfs.image)
            .and_then(|f| f.set_len(size_mb << 20))
            .map_err(|e| format!("creating {}: {e}", lfs.image.display()))?;
        let out = run(Command::new(tool("losetup"))
            .args(["-f", "--show"])
            .arg(&lfs.image))?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !device.starts_with("/dev/") {
            return Err(format!("losetup -f --show printed {device:?}"));
        }
        lfs.device = Some(device.clone());
        let mut mkfs = Command::new(tool(kind.mkfs()));
        match kind {
            FsKind::Btrfs => mkfs.args(["-q", "-f"]),
            FsKind::Xfs => mkfs.args(["-q", "-f", "-m", "reflink=1"]),
        };
        run(mkfs.arg(&device))?;
        fs::create_dir(&lfs.mount).map_err(|e| format!("mkdir {}: {e}", lfs.mount.display()))?;
        run(Command::new(tool("mount")).arg(&device).arg(&lfs.mount))?;
        lfs.mounted = true;
        fs::set_permissions(&lfs.mount, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", lfs.mount.display()))?;
        Ok(lfs)
    }

    /// [`LoopFs::new`], or `None` after printing why the test `test` is skipped — unless
    /// `PGSAFE_REQUIRE_LOOP=1`, which turns a skip into a panic.
    pub fn or_skip(kind: FsKind, size_mb: u64, test: &str) -> Option<LoopFs> {
        match LoopFs::new(kind, size_mb) {
            Ok(fs) => Some(fs),
            Err(why) => {
                let msg = format!(
                    "cannot make a {} file system on a loop device: {why}",
                    kind.name()
                );
                if std::env::var("PGSAFE_REQUIRE_LOOP").is_ok_and(|v| v == "1") {
                    panic!("{test}: {msg} (PGSAFE_REQUIRE_LOOP=1: not skipped)");
                }
                // Straight to the process's stderr: libtest captures `eprintln!` and shows it
                // only for failures; nextest shows it through .config/nextest.toml.
                let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {msg}");
                None
            }
        }
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// Where it is mounted (mode 0755, owned by root).
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The loop device it is on.
    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or_default()
    }

    /// A new btrfs subvolume `rel` (its parent folders must exist).
    pub fn subvolume(&self, rel: &str) -> PathBuf {
        assert_eq!(self.kind, FsKind::Btrfs, "subvolumes are a btrfs feature");
        let p = self.mount.join(rel);
        run(Command::new(tool("btrfs"))
            .args(["subvolume", "create"])
            .arg(&p))
        .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// The shell command that makes a read-only snapshot of subvolume `src` at `dst`
    /// (for hooks and `pgsafe snapshot --exec`).
    pub fn snapshot_command(src: &Path, dst: &Path) -> String {
        format!(
            "{} subvolume snapshot -r {} {}",
            tool("btrfs").display(),
            shell_quote(src),
            shell_quote(dst)
        )
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.mount);
        }
        if let Some(dev) = self.device.take() {
            detach(&dev);
        }
        let _ = fs::remove_file(&self.image);
    }
}

/// Unmounts `mount`: a server that has just exited may still hold it for a moment; as a last
/// resort lazily (the kernel finishes when the last user lets go).
fn unmount(mount: &Path) {
    let t = Instant::now();
    loop {
        let st = Command::new(tool("umount")).arg(mount).output();
        if st.is_ok_and(|o| o.status.success()) {
            return;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = Command::new(tool("umount")).arg("-l").arg(mount).output();
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Detaches a loop device (after a lazy unmount, the kernel does it when the mount goes).
fn detach(device: &str) {
    let _ = Command::new(tool("losetup")).args(["-d", device]).output();
}

/// Removes the loop file systems of test processes that no longer exist (killed by a timeout,
/// so their Drop never ran).
fn cleanup_stale() {
    let Ok(rd) = fs::read_dir(scratch_root()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            continue;
        }
        let dir = e.path();
        let mount = dir.join("mnt");
        let _ = Command::new(tool("umount")).arg(&mount).output();
        let image = dir.join("image");
        if let Ok(o) = Command::new(tool("losetup"))
            .args(["-j"])
            .arg(&image)
            .output()
        {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some((dev, _)) = line.split_once(':') {
                    detach(dev);
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// `tool` on `PATH` or in the sbin folders (a test's environment may lack `/usr/sbin`).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a command; `Err` with its output when it fails.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("running {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Single-quotes a path for `sh -c`.
pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
