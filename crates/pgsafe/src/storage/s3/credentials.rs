//! Where an S3 repository's access key comes from, and the credentials file.
//!
//! A secret never travels on a command line: arguments show in `ps` to every user, and an
//! `archive_command` or `restore_command` is readable by every database user who can run
//! `SHOW`. So the key comes from a file (the AWS shared credentials format, which the AWS
//! command-line tools write too), from environment variables whose names the settings give, from
//! the standard `AWS_*` variables, or from the machine's own role (no key at all).
//!
//! The credentials file is checked as a password file is (libpq's `passwordFromFile` in
//! src/interfaces/libpq/fe-connect.c refuses one others can read): only root or the user
//! running pgsafe may own it, nobody else may write it, and other users may not read it (its
//! group may, so that `root:postgres 0640` serves both the DBA and the server's
//! archive_command).

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::config::S3Credentials;

/// The profile read from a credentials file when none is named (the AWS tools' default).
pub const DEFAULT_PROFILE: &str = "default";

/// Where the access key comes from.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub enum CredentialSource {
    /// The standard variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (what happens when nothing else is set).
    #[default]
    AwsEnv,
    /// Given in memory by the caller (the key fields of `S3Settings`).
    Given,
    /// A file in the AWS shared credentials format (`[profile]` then
    /// `aws_access_key_id = …`, `aws_secret_access_key = …`, optionally
    /// `aws_session_token = …`).
    File {
        path: PathBuf,
        /// `None`: [`DEFAULT_PROFILE`].
        profile: Option<String>,
    },
    /// Environment variables with these names.
    Env {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// No key: the machine's role. The client asks, in this order, a web identity token
    /// (`AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, as on EKS), the container
    /// credentials endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on ECS, or
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`),
    /// else the EC2 instance metadata service (IMDSv2), and renews the temporary keys
    /// before they expire.
    Instance,
}

impl fmt::Display for CredentialSource {
    /// Where the key comes from, for messages (never the key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::AwsEnv => {
                f.write_str("the variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            }
            CredentialSource::Given => f.write_str("the caller"),
            CredentialSource::File { path, profile } => write!(
                f,
                "the credentials file {} (profile {})",
                path.display(),
                profile.as_deref().unwrap_or(DEFAULT_PROFILE)
            ),
            CredentialSource::Env {
                access_key_id,
                secret_access_key,
                ..
            } => write!(f, "the variables {access_key_id} and {secret_access_key}"),
            CredentialSource::Instance => f.write_str("the machine's role"),
        }
    }
}

/// The environment variables the role providers read (see [`CredentialSource::Instance`]),
/// passed to the client as they are.
pub const ROLE_VARIABLES: [&str; 7] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// Whether `name` can be an environment variable's name (letters, digits, `_`, not starting
/// with a digit).
pub fn is_variable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads `profile` of a credentials file's text (pure). Errors name the profile and the line,
/// never a value.
pub fn parse_credentials(text: &str, profile: &str) -> Result<S3Credentials, String> {
    let mut section: Option<&str> = None;
    let mut found = false;
    let (mut key, mut secret, mut token) = (None, None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("line {}: a profile header is [NAME]", n + 1))?
                .trim();
            // The AWS config file writes `[profile NAME]`; the credentials file `[NAME]`.
            let name = name.strip_prefix("profile ").map_or(name, str::trim);
            section = Some(name);
            found |= name == profile;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        if section != Some(profile) {
            continue;
        }
        let v = v.trim();
        let slot = match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => &mut key,
            "aws_secret_access_key" => &mut secret,
            "aws_session_token" => &mut token,
            // Region, output format and the like: not credentials, not ours to read.
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!(
                "line {}: `{}` is set twice in profile {profile}",
                n + 1,
                k.trim()
            ));
        }
        *slot = (!v.is_empty()).then(|| v.to_owned());
    }
    if !found {
        return Err(format!("it has no profile [{profile}]"));
    }
    match (key, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        (None, _) => Err(format!("profile [{profile}] has no aws_access_key_id")),
        (_, None) => Err(format!("profile [{profile}] has no aws_secret_access_key")),
    }
}

/// Reads the credentials of `profile` from the file `path`, after checking who can read and
/// change it (see the module's documentation).
pub fn load_credentials(path: &Path, profile: Option<&str>) -> Result<S3Credentials, String> {
    let profile = profile.unwrap_or(DEFAULT_PROFILE);
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!(
            "the credentials file {shown} is a relative path: give an absolute one (the \
             archiver runs its command in the data directory)"
        ));
    }
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the credentials file {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the credentials file {shown} is not a regular file"
        ));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "refusing the credentials file {shown}: it belongs to uid {}, not to root or to \
             you (uid {euid}); whoever owns it chooses which account the backups go to. Make \
             root or uid {euid} its owner",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "refusing the credentials file {shown}: users other than its owner can change it \
             (mode {mode:o}). Remove that permission: chmod go-w {shown}"
        ));
    }
    if mode & 0o004 != 0 {
        return Err(format!(
            "refusing the credentials file {shown}: every user can read the secret key in it \
             (mode {mode:o}). Restrict it: chmod o-rwx {shown} (its owner and group may read \
             it, e.g. root:postgres 0640)"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the credentials file {shown}: {e}"))?;
    parse_credentials(&text, profile).map_err(|why| format!("the credentials file {shown}: {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = "\
# written by aws configure
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret/with+chars=
region = eu-west-1

[profile backup]
aws_access_key_id=AKIDBACKUP
aws_secret_access_key=s2
aws_session_token = tok
; a comment
";

    #[test]
    fn profiles_are_read_and_other_keys_ignored() {
        let c = parse_credentials(FILE, "default").unwrap();
        assert_eq!(c.access_key_id, "AKIDDEFAULT");
        assert_eq!(c.secret_access_key, "secret/with+chars=");
        assert_eq!(c.session_token, None);
        let c = parse_credentials(FILE, "backup").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AKIDBACKUP", Some("tok"))
        );
        for (text, profile, why) in [
            (FILE, "nope", "no profile [nope]"),
            (
                "[default]\naws_access_key_id = k\n",
                "default",
                "no aws_secret_access_key",
            ),
            (
                "[default]\naws_secret_access_key = s\n",
                "default",
                "no aws_access_key_id",
            ),
            ("[default\n", "default", "line 1"),
            ("[default]\njust words\n", "default", "line 2"),
            (
                "[default]\naws_access_key_id = a\naws_access_key_id = b\n",
                "default",
                "set twice",
            ),
        ] {
            let e = parse_credentials(text, profile).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // A value never appears in a message.
        let e = parse_credentials("[default]\naws_secret_access_key = SEEKRIT\n", "default")
            .unwrap_err();
        assert!(!e.contains("SEEKRIT"), "{e}");
    }

    #[test]
    fn a_file_others_can_read_or_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(&p, FILE).unwrap();
        let chmod = |m: u32| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m));
        chmod(0o600).unwrap();
        assert_eq!(
            load_credentials(&p, None).unwrap().access_key_id,
            "AKIDDEFAULT"
        );
        chmod(0o640).unwrap();
        load_credentials(&p, Some("backup")).unwrap();
        for (mode, why) in [(0o644, "every user can read"), (0o620, "can change")] {
            chmod(mode).unwrap();
            let e = load_credentials(&p, None).unwrap_err();
            assert!(e.contains(why), "{mode:o}: {e}");
        }
        let e = load_credentials(Path::new("relative/creds"), None).unwrap_err();
        assert!(e.contains("relative"), "{e}");
        let e = load_credentials(&dir.path().join("missing"), None).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "(\\PC|\n|\\[|\\]|=){0,200}", profile in "\\PC{0,8}") {
            let _ = parse_credentials(&text, &profile);
        }
    }
}
