//! Encryption on the command line (docs/encryption.md): `init --encrypt …` (the repository's
//! keyring), and `pgsafe key list|rotate|writer-key`. Keys are never flag values: a passphrase
//! comes from `PGSAFE_PASSPHRASE` or a file, identities from a key file (`PGSAFE_KEY_FILE`).
//! The work is the library's (`pgsafe::storage::crypt`, `pgsafe::repo::encryption`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use pgsafe::repo::encryption::{create_encrypted, raw};
use pgsafe::storage::Location;
use pgsafe::storage::crypt::SecretKey;
use pgsafe::storage::crypt::keys::rotate::{list, rotate};
use pgsafe::storage::crypt::keys::{KdfParams, KeyMaterial, writer_key_line};
use pgsafe::storage::crypt::open::{self, PASSPHRASE_ENV, read_secret_file};

use crate::exit;
use crate::failure::usage;
use crate::repo::{location, repo_path};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EncryptMode {
    /// Data keys wrapped with a key derived (Argon2id) from a passphrase.
    Passphrase,
    /// Data keys wrapped to age X25519 recipients (public keys): hosts holding only them can
    /// back up and archive but not restore.
    Age,
}

/// `init`'s encryption options.
#[derive(Args, Debug, Clone, Default)]
pub struct EncryptArgs {
    /// Create the repository encrypted (only when it is created): `passphrase` (from
    /// PGSAFE_PASSPHRASE or --passphrase-file) or `age` (to --recipient public keys).
    #[arg(long, value_name = "MODE", value_enum)]
    pub encrypt: Option<EncryptMode>,
    /// An age X25519 recipient (public key, age1…) data keys are wrapped to; repeat for more.
    #[arg(long = "recipient", value_name = "AGE1…", requires = "encrypt")]
    pub recipients: Vec<String>,
    /// A file holding the passphrase (one line), instead of PGSAFE_PASSPHRASE.
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub passphrase_file: Option<PathBuf>,
    /// Write a key file for hosts that hold only public keys (the recipients and the
    /// repository's writer key) to FILE (created, mode 0600; never overwritten).
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub writer_key_out: Option<PathBuf>,
}

/// The passphrase from `file`, else PGSAFE_PASSPHRASE (through the library's reader).
fn passphrase(file: Option<&Path>, what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if let Some(f) = file {
        let text = read_secret_file(f, "passphrase file")?;
        let line = text.lines().next().unwrap_or_default();
        return Ok(zeroize::Zeroizing::new(line.to_owned()));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) if !p.is_empty() => Ok(zeroize::Zeroizing::new(p)),
        _ => Err(usage(format!(
            "{what} needs a passphrase: set {PASSPHRASE_ENV} or give a file with \
             --passphrase-file (never a flag value)"
        ))),
    }
}

/// Recipients from flags (public keys only), checked by the library's key file reader.
fn recipients(list: &[String], m: &mut KeyMaterial) -> anyhow::Result<()> {
    for r in list {
        if !r.starts_with("age1") {
            return Err(usage(
                "--recipient takes age X25519 public keys (age1…), never identities",
            ));
        }
        m.add_key_file(r)
            .map_err(|e| usage(format!("--recipient {r}: {e}")))?;
    }
    Ok(())
}

fn key_file_text(m_recipients: &[String], writer: &SecretKey) -> String {
    let mut s = String::from(
        "# pgsafe key file for a host that may back up and archive but not read (restore,\n\
         # verify, archive-get need an age identity or the passphrase). Set PGSAFE_KEY_FILE.\n",
    );
    for r in m_recipients {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str(&writer_key_line(writer));
    s.push('\n');
    s
}

fn write_new_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| usage(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates the encrypted repository for `init --encrypt`, and installs the keys this process
/// opens it with. Returns whether it was created.
pub fn init_encrypted(path: &Path, args: &EncryptArgs) -> anyhow::Result<bool> {
    let Some(mode) = args.encrypt else {
        return Ok(false);
    };
    let loc = location(path)?;
    if let Ok((_, info)) = raw(&loc) {
        return Err(usage(match info {
            Some(_) => format!(
                "{} is already an encrypted repository: register clusters with init without \
                 --encrypt, its keys given as for any command (PGSAFE_PASSPHRASE, \
                 PGSAFE_PASSPHRASE_FILE or PGSAFE_KEY_FILE)",
                path.display()
            ),
            None => format!(
                "{} is already a repository, not encrypted: encryption is chosen when a \
                 repository is created; create a new one",
                path.display()
            ),
        }));
    }
    let mut m = KeyMaterial::default();
    match mode {
        EncryptMode::Passphrase => {
            if !args.recipients.is_empty() {
                return Err(usage("--recipient goes with --encrypt age"));
            }
            m.passphrase = Some(passphrase(
                args.passphrase_file.as_deref(),
                "--encrypt passphrase",
            )?);
        }
        EncryptMode::Age => {
            if args.recipients.is_empty() {
                return Err(usage("--encrypt age needs at least one --recipient age1…"));
            }
            recipients(&args.recipients, &mut m)?;
        }
    }
    let pass = m.passphrase.clone();
    let created = create_encrypted(&loc, m, KdfParams::default())?;
    let writer = created.writer_key.clone();
    if let Some(out) = &args.writer_key_out {
        write_new_secret_file(out, &key_file_text(&args.recipients, &writer))?;
    }
    // This process goes on (registering the cluster) with the keys it created the repository
    // with.
    let recipients_text = args.recipients.join("\n");
    open::install(move || {
        let mut m = KeyMaterial::default();
        m.add_key_file(&recipients_text)?;
        m.passphrase = pass.clone();
        m.writer_key = Some(writer.clone());
        Ok(m)
    });
    Ok(true)
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the keys of an encrypted repository (backups, WAL epochs, the writer key) and how
    /// each is wrapped (passphrase, age recipients). Needs no key.
    List {
        /// The repository (default: `repo` in the config file).
        #[arg(long, value_name = "REPO")]
        repo: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wrap every key anew for a new passphrase and/or new recipients, without re-encrypting
    /// data; the old wrappings are removed once the new ones are durable. The current keys
    /// come from PGSAFE_PASSPHRASE / PGSAFE_PASSPHRASE_FILE / PGSAFE_KEY_FILE; the new
    /// passphrase from PGSAFE_NEW_PASSPHRASE or --new-passphrase-file.
    Rotate {
        /// The repository (default: `repo` in the config file).
        #[arg(long, value_name = "REPO")]
        repo: Option<PathBuf>,
        /// Wrap for a new passphrase read from FILE (or PGSAFE_NEW_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// Wrap for this age recipient; repeat for more.
        #[arg(long = "recipient", value_name = "AGE1…")]
        recipients: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a key file for a host that holds only public keys (recipients and the
    /// repository's writer key): it can back up and archive, not read. Needs the repository's
    /// keys (identity or passphrase).
    WriterKey {
        /// The repository (default: `repo` in the config file).
        #[arg(long, value_name = "REPO")]
        repo: Option<PathBuf>,
        /// The recipients to put in the file; repeat.
        #[arg(long = "recipient", value_name = "AGE1…", required = true)]
        recipients: Vec<String>,
        /// The file to create (mode 0600; never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

impl KeyArgs {
    pub fn json(&self) -> bool {
        match &self.command {
            KeyCommand::List { json, .. } | KeyCommand::Rotate { json, .. } => *json,
            KeyCommand::WriterKey { .. } => false,
        }
    }
}

fn encrypted_repo(
    flag: Option<&Path>,
) -> anyhow::Result<(
    Location,
    std::sync::Arc<dyn pgsafe::storage::Backend>,
    pgsafe::storage::crypt::keys::EncryptionInfo,
)> {
    let cfg = crate::config::resolved(None)?;
    let path = repo_path(flag, &cfg)?;
    let loc = location(&path)?;
    let (b, info) = raw(&loc)?;
    let Some(info) = info else {
        return Err(usage(format!(
            "{} is not an encrypted repository: it has no keys",
            path.display()
        )));
    };
    Ok((loc, b, info))
}

pub fn run(args: KeyArgs) -> anyhow::Result<u8> {
    match args.command {
        KeyCommand::List { repo, json } => {
            let (_, b, _) = encrypted_repo(repo.as_deref())?;
            let keys = list(&*b)?;
            if json {
                crate::render::json(&keys)?;
            } else {
                for k in keys {
                    let how: Vec<String> = k
                        .wrappings
                        .iter()
                        .map(|w| match w.kind.as_str() {
                            "age" => format!("age ({})", w.recipients.join(", ")),
                            other => other.to_owned(),
                        })
                        .collect();
                    println!("{}  {}  {}", k.scope, k.key_id, how.join("; "));
                }
            }
            Ok(exit::OK)
        }
        KeyCommand::Rotate {
            repo,
            new_passphrase_file,
            recipients: rs,
            json,
        } => {
            let (_, b, info) = encrypted_repo(repo.as_deref())?;
            let old = open::keyring(&*b, &info)?;
            let mut new = KeyMaterial::default();
            recipients(&rs, &mut new)?;
            if new_passphrase_file.is_some() || std::env::var_os("PGSAFE_NEW_PASSPHRASE").is_some()
            {
                new.passphrase = Some(match &new_passphrase_file {
                    Some(f) => passphrase(Some(f), "key rotate")?,
                    None => zeroize::Zeroizing::new(
                        std::env::var("PGSAFE_NEW_PASSPHRASE").unwrap_or_default(),
                    ),
                });
            }
            if new.passphrase.is_none() && new.recipients.is_empty() {
                return Err(usage(
                    "key rotate needs what to wrap for: --recipient age1… and/or a new \
                     passphrase (PGSAFE_NEW_PASSPHRASE or --new-passphrase-file)",
                ));
            }
            let report = rotate(&*b, &old, new, KdfParams::default())?;
            if json {
                crate::render::json(&report)?;
            } else {
                println!(
                    "rewrapped {} keys: {} wrappings written, {} old wrappings and {} passphrase \
                     records removed; no data was rewritten",
                    report.keys,
                    report.wrappings_written,
                    report.wrappings_removed,
                    report.passphrase_records_removed
                );
            }
            Ok(exit::OK)
        }
        KeyCommand::WriterKey {
            repo,
            recipients: rs,
            out,
        } => {
            let (_, b, info) = encrypted_repo(repo.as_deref())?;
            let k = open::keyring(&*b, &info)?;
            let mut check = KeyMaterial::default();
            recipients(&rs, &mut check)?;
            write_new_secret_file(&out, &key_file_text(&rs, k.writer_key()))?;
            println!("wrote {}", out.display());
            Ok(exit::OK)
        }
    }
}
