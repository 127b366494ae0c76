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

/// The version of the JSON documents `--json` prints (README "JSON output"): raised when a
/// field changes meaning or goes away; new fields do not raise it.
pub const JSON_SCHEMA_VERSION: u64 = 1;

/// Pretty JSON to stdout, with the conventions of every `--json` document applied (see
/// [`conventions`]).
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    conventions(&mut v);
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// [`json`] for a command's summary: also names what the command wrote or read (`target`) and
/// the exit code it ends with.
pub fn summary(
    value: &impl serde::Serialize,
    target: Option<&std::path::Path>,
    exit_code: u8,
) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    if let serde_json::Value::Object(m) = &mut v {
        if let Some(t) = target {
            m.insert("target".into(), t.to_string_lossy().into_owned().into());
        }
        m.insert("exit_code".into(), exit_code.into());
    }
    json(&v)
}

/// The JSON conventions, applied to the document as a whole so that no command can miss them:
/// - times (keys `time`, `*_time`, `*_at`) holding Unix seconds become RFC 3339 strings in UTC
///   (`"2026-11-21T02:30:00Z"`; 0, "unknown", becomes null);
/// - file modes (keys `mode`, `*_mode`) holding numbers become octal strings (`"0600"`);
/// - each document (the top-level object, or each object of a top-level array) carries
///   `schema_version` — unless it has its own version field (`format`: `pgsafe.json`); a
///   failure (`{"error": …}`) carries it too, so a reader checks the version first, always.
pub fn conventions(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, field) in m.iter_mut() {
                    let is_time = k == "time" || k.ends_with("_time") || k.ends_with("_at");
                    let is_mode = k == "mode" || k.ends_with("_mode");
                    match field.as_i64() {
                        Some(secs) if is_time && field.is_number() => {
                            *field = rfc3339(secs).map_or(Value::Null, Value::String);
                        }
                        Some(mode) if is_mode && (0..=0o7777).contains(&mode) => {
                            *field = Value::String(format!("{mode:04o}"));
                        }
                        _ => walk(field),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(v);
    let mark = |v: &mut Value| {
        if let Value::Object(m) = v {
            // pgsafe.json has its own version field.
            if !m.contains_key("format") {
                m.insert("schema_version".into(), JSON_SCHEMA_VERSION.into());
            }
        }
    };
    match v {
        Value::Array(a) => a.iter_mut().for_each(mark),
        other => mark(other),
    }
}

/// Unix seconds as RFC 3339 in UTC; `None` for 0 (unknown) or out of range.
fn rfc3339(secs: i64) -> Option<String> {
    if secs == 0 {
        return None;
    }
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_modes_and_version() {
        let mut v = json!({
            "started_at": 1_764_000_000,
            "result": {"stopped_at": 0, "stop_lsn": "0/3000100"},
            "control": {"time": 1_764_000_001, "checkpoint_time": 1_764_000_002},
            "files": [{"mode": 0o600, "size": 8192}],
            "wal": {"mode": "include"},
            "start_duration_ms": 12,
        });
        conventions(&mut v);
        assert_eq!(v["started_at"], "2025-11-24T16:00:00Z");
        assert_eq!(v["result"]["stopped_at"], serde_json::Value::Null);
        assert_eq!(v["control"]["time"], "2025-11-24T16:00:01Z");
        assert_eq!(v["control"]["checkpoint_time"], "2025-11-24T16:00:02Z");
        assert_eq!(v["files"][0]["mode"], "0600");
        assert_eq!(v["files"][0]["size"], 8192);
        assert_eq!(v["wal"]["mode"], "include");
        assert_eq!(v["start_duration_ms"], 12);
        assert_eq!(v["schema_version"], JSON_SCHEMA_VERSION);
        let mut a = json!([{"id": "a"}, {"id": "b"}]);
        conventions(&mut a);
        assert_eq!(a[1]["schema_version"], JSON_SCHEMA_VERSION);
        let mut info = json!({"format": 1, "finished_at": 1});
        conventions(&mut info);
        assert!(
            info.get("schema_version").is_none(),
            "pgsafe.json has its own"
        );
    }
}
