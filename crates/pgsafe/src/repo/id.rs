//! Backup IDs: the name of a backup's folder in a repository. Time-based, in UTC, so that a
//! listing is readable in order (`20261203T171205Z`); a second backup started in the same second
//! gets a suffix (`20261203T171205Z-2`). The ID is only a name: the catalog orders backups by
//! their lineage (system identifier, timeline, LSN, start time), never by ID, because clocks
//! move backwards and folders can be renamed.

use crate::storage::Ident;

/// The ID a backup started at `us` (microseconds since the epoch) gets when `attempt` IDs of
/// that second were taken: attempt 0 has no suffix, attempt n has `-<n+1>`.
pub fn backup_id(us: i64, attempt: u32) -> Ident {
    let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    let base = t.format("%Y%m%dT%H%M%SZ").to_string();
    let s = match attempt {
        0 => base,
        n => format!("{base}-{}", u64::from(n) + 1),
    };
    // Digits, letters and '-': always an ident.
    Ident::new(s).unwrap_or_else(|_| unreachable!("a formatted time is an ident"))
}

/// Whether `id` has the shape [`backup_id`] gives (others are accepted in a catalog, as a
/// folder an operator renamed or copied in, but never generated).
pub fn is_generated(id: &str) -> bool {
    let (base, suffix) = match id.split_once('-') {
        Some((b, s)) => (b, Some(s)),
        None => (id, None),
    };
    let b = base.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_based_and_suffixed() {
        // 2026-12-03T17:12:05.5Z
        let us = 1_796_317_925_500_000;
        assert_eq!(backup_id(us, 0).as_str(), "20261203T171205Z");
        assert_eq!(backup_id(us, 1).as_str(), "20261203T171205Z-2");
        assert!(is_generated("20261203T171205Z"));
        assert!(is_generated("20261203T171205Z-12"));
        assert!(!is_generated("20261203T171205"));
        assert!(!is_generated("20261203T171205Z-"));
        assert!(!is_generated("mybackup"));
    }

    #[test]
    fn ids_of_later_seconds_sort_later() {
        let a = backup_id(1_796_317_925_000_000, 0);
        let b = backup_id(1_796_317_926_000_000, 0);
        assert!(a < b);
    }
}
