//! Property tests: invariants that hold whatever happens.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Step {
    Note(usize, u8),
    Exit(usize, bool),
    Readable,
    Reload,
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<usize>(), 0u8..6).prop_map(|(w, m)| Step::Note(w, m)),
        (any::<usize>(), any::<bool>()).prop_map(|(w, c)| Step::Exit(w, c)),
        Just(Step::Readable),
        Just(Step::Reload),
        (0u16..3000).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens, a pool never runs more than maxchild workers, the ready count only
    /// counts current-generation idle workers, and no worker is sent SIGHUP twice.
    #[test]
    fn invariants_hold(prefork in 0u32..4, maxchild in 1u32..6, steps in proptest::collection::vec(step(), 1..120)) {
        let c = config(vec![service("imap", 143, prefork, Some(maxchild))]);
        let mut h = Harness::booted(c.clone());
        h.pending_config = Some(c);
        for s in steps {
            let live = h.workers_of("imap");
            match s {
                Step::Note(i, m) if !live.is_empty() => {
                    let pid = live[i % live.len()];
                    let message = [Message::Available, Message::Unavailable, Message::Connection,
                        Message::ConnectionMulti, Message::Exiting, Message::Available][m as usize];
                    h.note(pid, message);
                }
                Step::Exit(i, clean) if !live.is_empty() => {
                    let pid = live[i % live.len()];
                    let status = if clean { ExitStatus::Code(0) } else { ExitStatus::Signal { signal: 11, core: false } };
                    h.exit(pid, status);
                }
                Step::Readable => {
                    if let Some(pool) = h.watching.iter().next().copied() {
                        h.feed(Input::ListenerReadable { pool, waiting: 1 + (h.next_pid as u32 % 4) });
                    }
                }
                Step::Reload => h.feed(Input::ReloadRequested),
                Step::Advance(ms) => h.advance(Duration::from_millis(u64::from(ms))),
                _ => {}
            }
            let live = h.workers_of("imap");
            let exiting: usize = live.iter().filter(|p| h.sup.workers.get(p).is_some_and(|w| w.state == WorkerState::Exiting)).count();
            prop_assert!((live.len() - exiting) as u32 <= maxchild, "{} live, {} exiting, maxchild {}", live.len(), exiting, maxchild);
            for pid in &live {
                let hups = h.signals_to(*pid).iter().filter(|s| **s == Sig::Hup).count();
                prop_assert!(hups <= 1);
            }
            for (id, pool) in &h.sup.pools {
                let (_, ready) = h.sup.pool_counts(*id);
                let expected = h.sup.workers.values().filter(|w| w.pool == *id && w.generation == pool.generation && w.is_idle() && !w.recycle.hupped()).count() as u32;
                prop_assert_eq!(ready, expected);
            }
        }
    }
}
