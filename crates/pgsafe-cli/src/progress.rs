//! Renders the library's progress events: a bar on a terminal, periodic log lines otherwise,
//! NDJSON with `--progress json`. Everything goes to stderr; stdout is for results.
//!
//! Counting follows the library's contract (`pgsafe::progress`): each phase counts from zero
//! against its own totals. Log lines start with an RFC 3339 time; a phase's last counts are
//! reported when the next phase begins; the run ends with a final line (log) or event (JSON)
//! carrying the outcome, the exit code and every phase's counts ([`end`], called by `main` once
//! the exit code is known).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgsafe::progress::{Counters, Counts, Phase, Progress};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// A bar (drawn only on a terminal; warnings and notices are printed either way).
    Bar,
    /// Timestamped lines: each phase, its counts every 5 s and at its end, and a final line.
    Log,
    /// NDJSON events (phase, progress, warning, notice) ending with an `end` event.
    Json,
    None,
}

pub struct CliProgress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    started: Instant,
    counters: Counters,
    /// When the current phase began, and when its counts were last reported.
    clock: Mutex<(Instant, Instant)>,
    /// The counts of the phases that have ended.
    ended: Mutex<Vec<Counts>>,
    every: Duration,
}

/// What the final line needs of the run's progress (set by [`CliProgress::finish`]).
struct Ending {
    mode: ProgressMode,
    started: Instant,
    phases: Vec<Counts>,
}

static ENDING: Mutex<Option<Ending>> = Mutex::new(None);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "phase": c.phase.map(Phase::name),
        "files": c.files,
        "total_files": c.total_files,
        "bytes": c.bytes,
        "total_bytes": c.total_bytes,
    })
}

/// Prints the final line (log) or `end` event (JSON) of a run whose progress was shown.
pub fn end(code: u8) {
    let Some(e) = ENDING.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let outcome = match code {
        crate::exit::OK => "ok",
        crate::exit::PROBLEMS => "problems",
        _ => "error",
    };
    let secs = e.started.elapsed().as_secs_f64();
    match e.mode {
        ProgressMode::Log => {
            let phases: Vec<String> = e
                .phases
                .iter()
                .filter(|c| c.total_files.is_some())
                .map(|c| {
                    format!(
                        "{} {} files {:.1} MiB",
                        c.phase.map_or("-", Phase::name),
                        c.files,
                        mib(c.bytes)
                    )
                })
                .collect();
            eprintln!(
                "{} pgsafe: end: {outcome} (exit code {code}) after {secs:.1} s{}{}",
                now(),
                if phases.is_empty() { "" } else { "; " },
                phases.join(", ")
            );
        }
        ProgressMode::Json => eprintln!(
            "{}",
            json!({"event": "end", "time": now(), "outcome": outcome, "exit_code": code,
                "elapsed_secs": secs,
                "phases": e.phases.iter().map(counts_json).collect::<Vec<_>>()})
        ),
        _ => {}
    }
}

impl CliProgress {
    pub fn new(mode: ProgressMode) -> CliProgress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b
        });
        CliProgress {
            mode,
            bar,
            started: Instant::now(),
            counters: Counters::new(),
            clock: Mutex::new((Instant::now(), Instant::now())),
            ended: Mutex::new(Vec::new()),
            every: Duration::from_secs(if mode == ProgressMode::Json { 1 } else { 5 }),
        }
    }

    /// The work is over: clears the bar and keeps the counts for [`end`].
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let mut phases = std::mem::take(&mut *self.ended.lock().unwrap_or_else(|p| p.into_inner()));
        let last = self.counters.get();
        if last.phase.is_some() {
            self.report(true);
            phases.push(last);
        }
        if matches!(self.mode, ProgressMode::Log | ProgressMode::Json) {
            *ENDING.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ending {
                mode: self.mode,
                started: self.started,
                phases,
            });
        }
    }

    /// A line of the log or JSON rendering (or of a bar that is hidden off a terminal).
    fn line(&self, text: &str) {
        if self.mode == ProgressMode::Log {
            eprintln!("{} pgsafe: {text}", now());
        } else {
            eprintln!("pgsafe: {text}");
        }
    }

    /// Reports the current phase's counts (at most every `every`, unless `force`), once it has
    /// totals.
    fn report(&self, force: bool) {
        if !matches!(self.mode, ProgressMode::Log | ProgressMode::Json) {
            return;
        }
        let Ok(mut clock) = self.clock.try_lock() else {
            return;
        };
        if !force && clock.1.elapsed() < self.every {
            return;
        }
        clock.1 = Instant::now();
        let c = self.counters.get();
        let (Some(total_files), Some(total_bytes)) = (c.total_files, c.total_bytes) else {
            return;
        };
        let secs = clock.0.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { mib(c.bytes) / secs } else { 0.0 };
        let phase = c.phase.map_or("-", Phase::name);
        match self.mode {
            ProgressMode::Log => self.line(&format!(
                "{phase}: {:.1}/{:.1} MiB, {}/{total_files} files, {rate:.1} MiB/s",
                mib(c.bytes),
                mib(total_bytes),
                c.files
            )),
            ProgressMode::Json => eprintln!(
                "{}",
                json!({"event": "progress", "time": now(), "phase": phase,
                    "bytes": c.bytes, "total_bytes": total_bytes,
                    "files": c.files, "total_files": total_files,
                    "elapsed_secs": self.started.elapsed().as_secs_f64()})
            ),
            _ => {}
        }
    }

    /// Prints `text` above the bar, or as a line when there is no bar or it is hidden (indicatif
    /// prints nothing above a hidden bar).
    fn message(&self, event: &str, text: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) if !b.is_hidden() => b.println(format!("pgsafe: {text}")),
            (_, ProgressMode::Json) => {
                let msg = text.strip_prefix("warning: ").unwrap_or(text);
                eprintln!("{}", json!({"event": event, "time": now(), "message": msg}))
            }
            _ => self.line(text),
        }
    }
}

impl Progress for CliProgress {
    fn phase(&self, phase: Phase) {
        // The ending phase's last counts, then a fresh count.
        let ending = self.counters.get();
        if ending.phase.is_some() {
            self.report(true);
            self.ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ending);
        }
        self.counters.phase(phase);
        if let Ok(mut clock) = self.clock.lock() {
            *clock = (Instant::now(), Instant::now());
        }
        match self.mode {
            ProgressMode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_message(phase.name());
                    b.set_length(0);
                    b.set_position(0);
                }
            }
            ProgressMode::Log => self.line(&format!("phase {phase}")),
            ProgressMode::Json => eprintln!(
                "{}",
                json!({"event": "phase", "time": now(), "phase": phase.name()})
            ),
            _ => {}
        }
    }

    fn plan(&self, files: u64, bytes: u64) {
        self.counters.plan(files, bytes);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_position(0);
        }
        self.report(true);
    }

    fn file_done(&self, _rel: &str, _bytes: u64) {
        self.counters.file_done();
    }

    fn bytes(&self, n: u64) {
        self.counters.bytes(n);
        if let Some(b) = &self.bar {
            b.inc(n);
        } else {
            self.report(false);
        }
    }

    fn notice(&self, msg: &str) {
        self.message("notice", msg);
    }

    fn warn(&self, msg: &str) {
        self.message("warning", &format!("warning: {msg}"));
    }
}
