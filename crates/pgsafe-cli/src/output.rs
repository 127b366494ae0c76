//! The one writer of standard output (and the guard around standard error).
//!
//! Every `println!`/`print!` of the CLI expands to [`line`]/[`text`] (main.rs shadows the
//! standard macros for every module), so no result is written any other way. The standard
//! macros panic when a write fails — exit status 101 for `pgsafe verify … | head -1` or
//! `pgsafe doctor --json > /dev/full` — and a panic in the middle of a command can leave its
//! work half done. Here a failed write never panics:
//! - the reader went away (`EPIPE`: `| head`, a closed pipe): output stops quietly and the
//!   command finishes; its exit status is the one it would have had (the answer does not change
//!   because nobody reads the rest of the text);
//! - any other write error (`ENOSPC` on `/dev/full`, `EIO`): output stops, the command finishes,
//!   and [`finish`] turns its status into the command's error code (2) with the
//!   error on standard error — results that could not be written are an error, never a silent
//!   success.
//!
//! Standard error gets the same treatment except that its failures are ignored: there is
//! nowhere left to report them.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// What happened to standard output so far.
enum State {
    Open,
    /// The reader is gone: further output is dropped.
    ReaderGone,
    /// A write failed otherwise: further output is dropped, the command ends with an error.
    Failed(io::Error),
}

static STATE: Mutex<State> = Mutex::new(State::Open);

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    // A panic elsewhere while the lock was held leaves usable state behind: keep using it.
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// Writes `bytes` to standard output unless an earlier write failed; records a failure.
pub fn write_bytes(bytes: &[u8]) {
    with_state(|state| {
        if !matches!(state, State::Open) {
            return;
        }
        let mut out = io::stdout().lock();
        if let Err(e) = out.write_all(bytes) {
            *state = if e.kind() == io::ErrorKind::BrokenPipe {
                State::ReaderGone
            } else {
                State::Failed(e)
            };
        }
    })
}

/// `println!`: the formatted text and a newline.
pub fn line(args: fmt::Arguments<'_>) {
    let mut s = args.to_string();
    s.push('\n');
    write_bytes(s.as_bytes());
}

/// `print!`: the formatted text.
#[allow(dead_code)] // see the print! macro in main.rs
pub fn text(args: fmt::Arguments<'_>) {
    write_bytes(args.to_string().as_bytes());
}

/// `eprintln!`: to standard error, ignoring failures (there is nowhere to report them).
pub fn err_line(args: fmt::Arguments<'_>) {
    let mut s = args.to_string();
    s.push('\n');
    let _ = io::stderr().lock().write_all(s.as_bytes());
}

/// Standard output as an [`io::Write`] for code that writes raw bytes: goes through the same
/// state, so it never fails (a failure is reported by [`finish`]).
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exit status after the command returned `code`: flushes standard output; a write error
/// other than a vanished reader becomes `write_error` (the error code, 2) with the error on
/// standard error.
pub fn finish(code: u8, write_error: u8) -> u8 {
    with_state(|state| {
        if matches!(state, State::Open) {
            if let Err(e) = io::stdout().lock().flush() {
                *state = if e.kind() == io::ErrorKind::BrokenPipe {
                    State::ReaderGone
                } else {
                    State::Failed(e)
                };
            }
        }
        match state {
            State::Open | State::ReaderGone => code,
            State::Failed(e) => {
                let _ = writeln!(
                    io::stderr().lock(),
                    "pgsafe: error: could not write the results to standard output: {e}"
                );
                write_error
            }
        }
    })
}
