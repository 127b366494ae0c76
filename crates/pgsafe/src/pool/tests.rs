use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

/// Blocks until the run is stopped (a worker that would hang forever if the pool did not stop
/// the others).
fn wait_for_stop<E>(halt: &Halt<'_, E>) {
    while !halt.stopped() {
        std::thread::yield_now();
    }
}

#[test]
fn first_error_wins_over_the_errors_it_causes() {
    let halt: Halt<'_, u32> = Halt::new(None);
    let items: Vec<u32> = (0..64).collect();
    // Item 0 fails; every other item waits for the stop and then fails too: only item 0's
    // error may come back, whatever the number of workers.
    for jobs in [1, 2, 8] {
        let halt = Halt::new(None);
        let r = run(
            jobs,
            &items,
            &halt,
            || (),
            |_, &i| {
                if i != 0 {
                    wait_for_stop(&halt);
                }
                Err(i)
            },
        );
        assert_eq!(r.err(), Some(Stopped::Failed(0)), "jobs {jobs}");
    }
    assert_eq!(halt.check(), Ok(()));
}

#[test]
fn an_error_stops_one_worker_before_its_next_item() {
    let items: Vec<u32> = (0..100).collect();
    let seen = AtomicU32::new(0);
    let halt = Halt::new(None);
    let r = run(
        1,
        &items,
        &halt,
        || (),
        |_, &i| {
            seen.fetch_add(1, Ordering::Relaxed);
            if i == 5 {
                Err(format!("item {i}"))
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(r.err(), Some(Stopped::Failed("item 5".to_owned())));
    assert_eq!(seen.load(Ordering::Relaxed), 6);
}

#[test]
fn an_error_recorded_by_a_helper_thread_fails_the_run() {
    let halt: Halt<'_, &str> = Halt::new(None);
    let items: Vec<u32> = (0..8).collect();
    std::thread::scope(|s| {
        s.spawn(|| halt.fail("fsync failed"));
        let r = run(
            4,
            &items,
            &halt,
            || (),
            |_, _| {
                wait_for_stop(&halt);
                Err("cancelled")
            },
        );
        assert_eq!(r.err(), Some(Stopped::Failed("fsync failed")));
    });
}

#[test]
fn cancel_stops_every_worker() {
    let cancel = AtomicBool::new(false);
    let items: Vec<u32> = (0..1000).collect();
    for jobs in [1, 3] {
        cancel.store(false, Ordering::Relaxed);
        let halt: Halt<'_, String> = Halt::new(Some(&cancel));
        let started = AtomicU32::new(0);
        let r = run(
            jobs,
            &items,
            &halt,
            || (),
            |_, &i| {
                started.fetch_add(1, Ordering::Relaxed);
                if i == 10 {
                    cancel.store(true, Ordering::Relaxed);
                }
                // Work in progress sees the stop (as the commands check between buffers).
                if i >= 10 {
                    wait_for_stop(&halt);
                }
                Ok(())
            },
        );
        assert_eq!(r.err(), Some(Stopped::Cancelled), "jobs {jobs}");
        // Each worker takes at most one item after item 10 was taken.
        assert!(
            started.load(Ordering::Relaxed) <= 11 + jobs as u32,
            "jobs {jobs}"
        );
    }
}

#[test]
fn cancelled_before_the_start_runs_nothing() {
    let cancel = AtomicBool::new(true);
    let halt: Halt<'_, ()> = Halt::new(Some(&cancel));
    let r = run(
        4,
        &[1, 2, 3],
        &halt,
        || (),
        |_, _| -> Result<(), ()> { panic!("no item may run") },
    );
    assert_eq!(r.err(), Some(Stopped::Cancelled));
}

#[test]
fn a_panic_is_passed_on_with_its_payload_and_stops_the_others() {
    let items: Vec<u32> = (0..32).collect();
    for jobs in [1, 4] {
        let halt: Halt<'_, ()> = Halt::new(None);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(
                jobs,
                &items,
                &halt,
                || (),
                |_, &i| {
                    if i == 7 {
                        std::panic::panic_any(format!("boom {i}"));
                    }
                    if i > 7 {
                        wait_for_stop(&halt);
                    }
                    Ok(())
                },
            )
        }));
        let payload = r.expect_err("the panic must reach the caller");
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("boom 7")
        );
    }
}

#[test]
fn zero_items_run_nothing_and_succeed() {
    let halt: Halt<'_, ()> = Halt::new(None);
    let states = run(
        8,
        &[] as &[u32],
        &halt,
        || 0u32,
        |n, _| {
            *n += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(states.iter().sum::<u32>(), 0);
    assert!(states.len() <= 1);
}

#[test]
fn each_worker_builds_its_state_once() {
    let inits = AtomicUsize::new(0);
    let items: Vec<u32> = (0..500).collect();
    let halt: Halt<'_, ()> = Halt::new(None);
    let states = run(
        3,
        &items,
        &halt,
        || {
            inits.fetch_add(1, Ordering::Relaxed);
            Vec::<u32>::with_capacity(0)
        },
        |seen, &i| {
            seen.push(i);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(inits.load(Ordering::Relaxed), states.len());
    assert_eq!(states.len(), 3);
    // One worker takes items in list order.
    for s in &states {
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn parts_complete_once_in_range_order() {
    let parts = Parts::new(3);
    assert_eq!(parts.done(2, "c"), None);
    assert_eq!(parts.done(0, "a"), None);
    assert_eq!(parts.done(1, "b"), Some(vec!["a", "b", "c"]));
    assert_eq!(parts.done(1, "b"), None);
}

proptest! {
    #[test]
    fn ranges_cover_an_item_exactly_once(size in 0u64..1 << 40, range in 0u64..1 << 32) {
        let rs = ranges(size, range);
        let mut at = 0;
        for &(off, len) in &rs {
            prop_assert_eq!(off, at);
            prop_assert!(len >= 1 && len <= range.max(1));
            at += len;
        }
        prop_assert_eq!(at, size);
        prop_assert_eq!(rs.len() as u64, size.div_ceil(range.max(1)));
    }

    #[test]
    fn every_item_runs_exactly_once(count in 0usize..200, jobs in 0usize..12) {
        let items: Vec<usize> = (0..count).collect();
        let runs: Vec<AtomicU32> = (0..count).map(|_| AtomicU32::new(0)).collect();
        let halt: Halt<'_, ()> = Halt::new(None);
        let states = run(jobs, &items, &halt, Vec::new, |mine: &mut Vec<usize>, &i| {
            runs[i].fetch_add(1, Ordering::Relaxed);
            mine.push(i);
            Ok(())
        })
        .unwrap();
        prop_assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        prop_assert_eq!(states.len(), jobs.clamp(1, count.max(1)));
        let all: BTreeSet<usize> = states.into_iter().flatten().collect();
        prop_assert_eq!(all.len(), count);
    }

    #[test]
    fn parts_hand_every_result_to_exactly_one_caller(count in 1usize..40, jobs in 1usize..6) {
        let parts = Parts::new(count);
        let order: Vec<usize> = (0..count).rev().collect();
        let halt: Halt<'_, ()> = Halt::new(None);
        let states = run(jobs, &order, &halt, Vec::new, |got: &mut Vec<Vec<usize>>, &i| {
            got.extend(parts.done(i, i));
            Ok(())
        })
        .unwrap();
        let got: Vec<Vec<usize>> = states.into_iter().flatten().collect();
        prop_assert_eq!(got, vec![(0..count).collect::<Vec<_>>()]);
    }
}
