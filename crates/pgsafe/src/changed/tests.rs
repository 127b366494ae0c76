use proptest::prelude::*;

use super::*;
use crate::wal::summary::{ForkSummary, encode_summary, parse_summary};

fn rel(n: u32) -> RelFileLocator {
    RelFileLocator {
        spc_oid: 1663,
        db_oid: 5,
        rel_number: n,
    }
}

fn blocks(p: FilePlan) -> Vec<u32> {
    match p {
        FilePlan::Blocks { blocks } => blocks,
        FilePlan::Whole { reason } => panic!("whole: {reason}"),
    }
}

#[test]
fn limits_forget_later_blocks_and_force_the_tail() {
    let mut c = ChangedBlocks::new();
    for b in [1, 5, 9, 20] {
        c.mark_block(rel(1), Fork::Main, b);
    }
    c.set_limit(rel(1), Fork::Main, 8);
    c.set_limit(rel(1), Fork::Main, 15); // higher: no effect
    c.mark_block(rel(1), Fork::Main, 12); // re-extended
    let e = c.fork(rel(1), Fork::Main).expect("entry");
    assert_eq!(e.limit_block, Some(8));
    assert_eq!(e.blocks.iter().copied().collect::<Vec<_>>(), [1, 5, 12]);
    // Now 14 blocks long: 1, 5, and everything from the limit on.
    assert_eq!(
        blocks(c.plan_segment(rel(1), Fork::Main, 0, 131072, 14)),
        [1, 5, 8, 9, 10, 11, 12, 13]
    );
    // Second segment of 4-block segments: blocks 4..8 of the relation.
    assert_eq!(blocks(c.plan_segment(rel(1), Fork::Main, 1, 4, 4)), [1]);
    // Untouched relations are unchanged; FSM, created forks, recreated databases and doubt
    // are whole.
    assert_eq!(
        blocks(c.plan_segment(rel(2), Fork::Main, 0, 131072, 10)),
        Vec::<u32>::new()
    );
    assert!(matches!(
        c.plan_segment(rel(1), Fork::Fsm, 0, 131072, 3),
        FilePlan::Whole { .. }
    ));
    c.set_limit(rel(3), Fork::Vm, 0);
    assert!(matches!(
        c.plan_segment(rel(3), Fork::Vm, 0, 131072, 3),
        FilePlan::Whole { .. }
    ));
    c.set_database_recreated(1663, 5);
    assert!(matches!(
        c.plan_segment(rel(2), Fork::Main, 0, 131072, 3),
        FilePlan::Whole { .. }
    ));
    let mut d = ChangedBlocks::new();
    d.set_doubt("a record not understood");
    d.set_doubt("later");
    assert_eq!(d.doubt(), Some("a record not understood"));
    assert!(matches!(
        d.plan_segment(rel(2), Fork::Main, 0, 131072, 3),
        FilePlan::Whole { .. }
    ));
}

#[test]
fn summaries_convert_with_their_database_markers() {
    let mut t = BlockRefTable::default();
    t.forks.insert(
        (rel(0), Fork::Main),
        ForkSummary {
            limit_block: Some(0),
            blocks: Default::default(),
        },
    );
    t.forks.insert(
        (
            RelFileLocator {
                db_oid: 6,
                ..rel(9)
            },
            Fork::Main,
        ),
        ForkSummary {
            limit_block: Some(3),
            blocks: [0, 7].into_iter().collect(),
        },
    );
    let c = ChangedBlocks::from_summary(&parse_summary(&encode_summary(&t)).expect("parses"));
    assert!(matches!(
        c.plan_segment(rel(42), Fork::Main, 0, 131072, 1),
        FilePlan::Whole { .. }
    ));
    let other = RelFileLocator {
        db_oid: 6,
        ..rel(9)
    };
    assert_eq!(
        blocks(c.plan_segment(other, Fork::Main, 0, 131072, 9)),
        [0, 3, 4, 5, 6, 7, 8]
    );
}

proptest! {
    /// Appending stretch B to stretch A plans the same copies as applying A's then B's events
    /// to one set, and a planned file never misses a block that was marked.
    #[test]
    fn append_is_applying_in_order(
        a in proptest::collection::vec((any::<bool>(), 0u32..40), 0..30),
        b in proptest::collection::vec((any::<bool>(), 0u32..40), 0..30),
    ) {
        let apply = |c: &mut ChangedBlocks, ev: &[(bool, u32)]| {
            for &(limit, n) in ev {
                if limit { c.set_limit(rel(1), Fork::Main, n) } else { c.mark_block(rel(1), Fork::Main, n) }
            }
        };
        let (mut x, mut y, mut all) = (ChangedBlocks::new(), ChangedBlocks::new(), ChangedBlocks::new());
        apply(&mut x, &a);
        apply(&mut y, &b);
        x.append(&y);
        apply(&mut all, &a);
        apply(&mut all, &b);
        // Blocks at or past the lowest limit may differ (the server's own rule keeps some a
        // sequence forgets), but those are copied anyway: the plans are the same.
        for n in [0u32, 10, 40, 60] {
            prop_assert_eq!(
                x.plan_segment(rel(1), Fork::Main, 0, 131072, n),
                all.plan_segment(rel(1), Fork::Main, 0, 131072, n)
            );
        }
        // Every marked block below the file's end is in the plan (unless whole).
        if let FilePlan::Blocks { blocks } = all.plan_segment(rel(1), Fork::Main, 0, 131072, 40) {
            for &(limit, n) in a.iter().chain(&b) {
                if !limit {
                    prop_assert!(blocks.contains(&n), "block {} missing from {:?}", n, blocks);
                }
            }
        }
    }
}
