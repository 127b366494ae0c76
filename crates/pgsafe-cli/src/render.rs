//! Small helpers for human-readable output.

use chrono::{DateTime, Utc};

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0.
pub fn epoch(secs: i64) -> String {
    if secs == 0 {
        return "-".into();
    }
    match DateTime::<Utc>::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{secs} (out of range)"),
    }
}

/// Prints `name` padded to a column, then the value.
pub fn field(name: &str, value: impl std::fmt::Display) {
    println!("{name:<22}{value}");
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Pretty JSON to stdout.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
