//! Installing pgsafe like a tool: shell completions and man pages generated from the command
//! definition, and the systemd unit and timer the README shows (checked by systemd's own
//! `systemd-analyze verify` where it is installed).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ok, pgsafe};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example unit and timer in contrib/systemd are the ones the README shows (verbatim), and
/// systemd accepts them without a warning.
#[test]
fn systemd_example_is_valid() {
    let root = repo_root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in ["pgsafe-backup.service", "pgsafe-backup.timer"] {
        let text = fs::read_to_string(root.join("contrib/systemd").join(name)).unwrap();
        assert!(
            readme.contains(&format!("```ini\n{text}```")),
            "README.md does not show contrib/systemd/{name} as it is"
        );
        let path = scratch.path().join(name);
        fs::write(&path, &text).unwrap();
        units.push(path);
    }
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the unit files were not verified by systemd");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {err}");
    assert!(
        err.trim().is_empty(),
        "systemd-analyze verify warned: {err}"
    );
}

/// `pgsafe completions bash` is a script bash accepts (`bash -n`) that completes the commands;
/// the other shells get a script too; an unknown shell is refused.
#[test]
fn completions_are_generated() {
    let out = ok(pgsafe(&["completions", "bash"]), "completions bash");
    let script = String::from_utf8(out.stdout).unwrap();
    for word in ["backup", "verify", "restore", "snapshot", "--output-dir"] {
        assert!(script.contains(word), "{word} is not completed");
    }
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("pgsafe.bash");
    fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = ok(pgsafe(&["completions", shell]), shell);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("snapshot"),
            "{shell}"
        );
    }
    assert_eq!(pgsafe(&["completions", "tcsh"]).status.code(), Some(2));
}

/// `pgsafe man --dir` writes pgsafe.1 and one page per command; groff formats each without a
/// warning (`-k`: the pages are UTF-8, as man(1) reads them); `pgsafe man` prints pgsafe.1
/// itself.
#[test]
fn man_pages_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(pgsafe(&["man", "--dir", d]), "man --dir");
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for page in [
        "pgsafe.1",
        "pgsafe-backup.1",
        "pgsafe-stop.1",
        "pgsafe-man.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("holder")), "{names:?}");
    let printed = ok(pgsafe(&["man"]), "man").stdout;
    assert_eq!(printed, fs::read(dir.path().join("pgsafe.1")).unwrap());
    for n in &names {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.path().join(n))
            .output();
        let Ok(out) = out else {
            eprintln!("groff is not installed: the pages were not formatted");
            return;
        };
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.trim().is_empty(), "{n}: {err}");
    }
    let backup = fs::read_to_string(dir.path().join("pgsafe-backup.1")).unwrap();
    assert!(
        backup.contains("skip\\-space\\-check"),
        "flags are documented"
    );
}
