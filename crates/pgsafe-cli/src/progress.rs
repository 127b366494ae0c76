//! Renders the library's progress events: a bar on a terminal, periodic log lines otherwise,
//! NDJSON with `--progress json`. Everything goes to stderr; stdout is for results.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgsafe::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    Bar,
    Log,
    Json,
    None,
}

pub struct CliProgress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    started: Instant,
    total_bytes: AtomicU64,
    total_files: AtomicU64,
    done_bytes: AtomicU64,
    done_files: AtomicU64,
    last_report: Mutex<Instant>,
    every: Duration,
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
            total_bytes: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            done_files: AtomicU64::new(0),
            last_report: Mutex::new(Instant::now()),
            every: Duration::from_secs(if mode == ProgressMode::Json { 1 } else { 5 }),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn report(&self, force: bool) {
        let Ok(mut last) = self.last_report.try_lock() else {
            return;
        };
        if !force && last.elapsed() < self.every {
            return;
        }
        *last = Instant::now();
        let done = self.done_bytes.load(Ordering::Relaxed);
        let total = self.total_bytes.load(Ordering::Relaxed);
        let files = self.done_files.load(Ordering::Relaxed);
        let total_files = self.total_files.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            done as f64 / secs / (1 << 20) as f64
        } else {
            0.0
        };
        match self.mode {
            ProgressMode::Log => eprintln!(
                "pgsafe: {:.1}/{:.1} MiB, {files}/{total_files} files, {rate:.1} MiB/s",
                done as f64 / (1 << 20) as f64,
                total as f64 / (1 << 20) as f64
            ),
            ProgressMode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "progress", "bytes": done, "total_bytes": total,
                    "files": files, "total_files": total_files, "elapsed_secs": secs})
            ),
            _ => {}
        }
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str) {
        match self.mode {
            ProgressMode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_message(name.to_owned());
                }
            }
            ProgressMode::Log => eprintln!("pgsafe: {name}"),
            ProgressMode::Json => {
                eprintln!("{}", serde_json::json!({"event": "phase", "phase": name}))
            }
            _ => {}
        }
    }

    fn plan(&self, files: u64, bytes: u64) {
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.total_files.store(files, Ordering::Relaxed);
        self.done_bytes.store(0, Ordering::Relaxed);
        self.done_files.store(0, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_position(0);
        }
        self.report(true);
    }

    fn file_done(&self, _rel: &str, _bytes: u64) {
        self.done_files.fetch_add(1, Ordering::Relaxed);
    }

    fn bytes(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.mode != ProgressMode::None {
            self.report(false);
        }
    }

    fn notice(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(format!("pgsafe: {msg}")),
            (None, ProgressMode::Json) => {
                eprintln!("{}", serde_json::json!({"event": "notice", "message": msg}))
            }
            _ => eprintln!("pgsafe: {msg}"),
        }
    }

    fn warn(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(format!("pgsafe: warning: {msg}")),
            (None, ProgressMode::Json) => {
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "warning", "message": msg})
                )
            }
            _ => eprintln!("pgsafe: warning: {msg}"),
        }
    }
}
