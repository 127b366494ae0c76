//! The options that act on a library error. The library says what to do in words (it knows no
//! command line); when the error is shown, this adds the option of this CLI that does it.

use std::error::Error as StdError;

use pgsafe::backup::{BackupError, BackupWalError};
use pgsafe::hold::{HoldError, Refusal};
use pgsafe::restore::{MappingError, OwnerError, RecoveryError, RestoreError};
use pgsafe::restore_test::{RestoreTestError, RunAsError, ScratchError};

/// The flag advice for the first error in `e`'s chain that has some.
pub fn for_error(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(of_cause)
}

fn of_cause(e: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(e) = e.downcast_ref::<BackupError>() {
        return backup(e).map(str::to_owned);
    }
    // Before the restore it runs: a restore test sets the restore's options itself.
    if let Some(e) = e.downcast_ref::<RestoreTestError>() {
        return restore_test(e).map(str::to_owned);
    }
    if let Some(e) = e.downcast_ref::<RestoreError>() {
        return restore(e);
    }
    if let Some(e) = e.downcast_ref::<HoldError>() {
        return hold(e).map(str::to_owned);
    }
    None
}

fn hold(e: &HoldError) -> Option<&'static str> {
    match e {
        HoldError::Refused(Refusal::NotArchiving {
            backup_running: true,
            ..
        }) => Some("stop it with --no-wait-archive"),
        HoldError::Refused(Refusal::NotArchiving { .. }) => {
            Some("leave out --wait-archive, or give --no-wait-archive")
        }
        HoldError::Refused(Refusal::RecordTableOnStandby) => Some("stop it without --record-table"),
        HoldError::Refused(Refusal::BadRecordTable { .. }) => {
            Some("--record-table TABLE or SCHEMA.TABLE")
        }
        HoldError::AlreadyRunning { .. } => Some("--id names another backup"),
        HoldError::SocketPathTooLong(_) => {
            Some("--run-dir or PGSAFE_RUN_DIR chooses the run directory")
        }
        HoldError::UnknownId { .. } => {
            Some("--run-dir or PGSAFE_RUN_DIR names the run directory the backup was started with")
        }
        _ => None,
    }
}

fn backup(e: &BackupError) -> Option<&'static str> {
    match e {
        BackupError::NoSlots => Some(
            "--wal archive takes the WAL from the server's archive; --wal none leaves it to \
             your own archive",
        ),
        BackupError::Slot { source } if matches!(source.code(), Some("42501" | "53400")) => {
            Some("--wal archive takes the WAL from the server's archive")
        }
        BackupError::Wal(BackupWalError::NotArchiving { .. }) => {
            Some("--wal include copies the WAL into the backup")
        }
        _ => None,
    }
}

fn restore(e: &RestoreError) -> Option<String> {
    Some(match e {
        RestoreError::TablespaceNotEmpty { oid, .. } => {
            format!("--tablespace-map {oid}=NEW_EMPTY_DIR restores it elsewhere")
        }
        RestoreError::TablespaceMapping(MappingError::NotAbsolute { oid, .. }) => {
            format!("--tablespace-map {oid}=/absolute/path")
        }
        RestoreError::TablespaceMapping(
            MappingError::MappedTwice { .. } | MappingError::NoSuchTablespace { .. },
        ) => "check the --tablespace-map options".to_owned(),
        RestoreError::NoWal { .. } => "--restore-command 'cp /path/to/archive/%f %p', or \
                                       --standby with --primary-conninfo"
            .to_owned(),
        RestoreError::Recovery(r) => recovery(r).to_owned(),
        RestoreError::Owner(
            OwnerError::NotRecorded
            | OwnerError::Root
            | OwnerError::NoChangeIds { .. }
            | OwnerError::NoChangeSpec { .. },
        ) => "--owner USER names the user the server runs as".to_owned(),
        RestoreError::Owner(_) => "check --owner (USER[:GROUP] or UID[:GID])".to_owned(),
        _ => return None,
    })
}

fn recovery(e: &RecoveryError) -> &'static str {
    match e {
        RecoveryError::ActionWithoutTarget => {
            "--target-action needs --target-time, --target-lsn, --target-xid, --target-name or \
             --target-immediate"
        }
        RecoveryError::PrimaryWithoutStandby => "--primary-conninfo needs --standby",
        RecoveryError::StandbyWithoutWal => {
            "--standby needs --primary-conninfo and/or --restore-command"
        }
        RecoveryError::ImmediateWithoutRestoreCommand => {
            "--target-immediate needs --restore-command; without both, the restore opens at the \
             end of the backup"
        }
        RecoveryError::TargetWithoutRestoreCommand { .. } => {
            "--restore-command 'cp /path/to/archive/%f %p' fetches it"
        }
        RecoveryError::Empty { setting } | RecoveryError::LineBreak { setting } => match *setting {
            "restore_command" => "check --restore-command",
            "primary_conninfo" => "check --primary-conninfo",
            "recovery_target_time" => "check --target-time",
            "recovery_target_lsn" => "check --target-lsn",
            "recovery_target_xid" => "check --target-xid",
            "recovery_target_name" => "check --target-name",
            _ => "check the recovery options",
        },
        RecoveryError::BadXid { .. } => "check --target-xid",
        RecoveryError::TimelineWithoutWal => {
            "--target-timeline needs --restore-command (or --standby)"
        }
    }
}

fn restore_test(e: &RestoreTestError) -> Option<&'static str> {
    match e {
        RestoreTestError::RunAs(RunAsError::Inspect { .. }) => None,
        RestoreTestError::RunAs(_) => Some("--run-as USER names the user the server runs as"),
        RestoreTestError::Scratch(ScratchError::Unreachable { .. })
        | RestoreTestError::Scratch(ScratchError::SocketPathTooLong { .. }) => {
            Some("--scratch-dir DIR chooses the scratch folder")
        }
        RestoreTestError::NoBinaries { .. } => Some("--pg-bindir names the bin folder"),
        _ => None,
    }
}
