//! [`run_rank`]: a rank's worker threads, sharing one [`Pool`], beside its coordinator
//! ([`crate::coordinator`]: the one thread that talks to the other ranks, shares work with them
//! and detects the end).
//!
//! - **Within a rank** workers pop from the back of the pool (depth first).
//! - **Across ranks** an idle rank steals from the front of a victim's pool (the shallowest
//!   items: the largest subtrees); see [`crate::coordinator`] for the protocol.
//! - A panic on any thread sets the pool's quit flag, which stops every worker.

use crate::coordinator::Coordinator;
use crate::pool::{Pool, QuitOnDrop, StealConfig, StealStats, Work, Worker};
use crate::progress::Status;
use crate::protocol::Transport;

/// Runs one rank until every rank has run out of work. `initial` is this rank's starting work
/// (usually the root on rank 0, nothing elsewhere). Returns the workers, for their results.
pub fn run_rank<W, K, T>(
    transport: &mut T,
    workers: Vec<K>,
    initial: Vec<W>,
    config: StealConfig,
    status: &dyn Status,
) -> (Vec<K>, StealStats)
where
    W: Work,
    K: Worker<W>,
    T: Transport,
{
    assert!(
        !workers.is_empty(),
        "a rank needs at least one worker thread"
    );
    let pool = Pool::new(initial);
    // The workers log within the rank's span too.
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut worker| {
                let (pool, span) = (&pool, span.clone());
                scope.spawn(move || {
                    let _span = span.enter();
                    let processed = pool.serve(&mut worker);
                    (worker, processed)
                })
            })
            .collect();
        let mut stats = {
            let _guard = QuitOnDrop(&pool);
            Coordinator::new(transport, &pool, config, status).run()
        };
        let workers = handles
            .into_iter()
            .map(|h| {
                let (worker, processed) = h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                stats.items_processed += processed;
                worker
            })
            .collect();
        (workers, stats)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Spawner;
    use crate::progress::{RankProgress, Silent};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A message and the rank it came from.
    type Envelope = (usize, Vec<u8>);

    /// In-process transport: one channel per rank.
    struct ChannelTransport {
        rank: usize,
        peers: Vec<mpsc::Sender<Envelope>>,
        inbox: mpsc::Receiver<Envelope>,
    }

    impl Transport for ChannelTransport {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.peers.len()
        }
        fn send(&mut self, dest: usize, msg: Vec<u8>) {
            self.peers[dest]
                .send((self.rank, msg))
                .expect("peer alive until Exit");
        }
        fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
            self.inbox.try_recv().ok()
        }
    }

    fn transports(n: usize) -> Vec<ChannelTransport> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
        receivers
            .into_iter()
            .enumerate()
            .map(|(rank, inbox)| ChannelTransport {
                rank,
                peers: senders.clone(),
                inbox,
            })
            .collect()
    }

    /// A node of a virtual tree: `fanout` children per level until `depth` reaches 0.
    #[derive(Debug, Clone, Copy)]
    struct Node {
        id: u64,
        depth: u32,
        fanout: u32,
    }

    impl Work for Node {
        fn encoded_len(&self) -> usize {
            16
        }

        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.id.to_le_bytes());
            out.extend_from_slice(&self.depth.to_le_bytes());
            out.extend_from_slice(&self.fanout.to_le_bytes());
        }
        fn decode(buf: &mut &[u8]) -> Option<Self> {
            let (id, rest) = buf.split_first_chunk::<8>()?;
            let (depth, rest) = rest.split_first_chunk::<4>()?;
            let (fanout, rest) = rest.split_first_chunk::<4>()?;
            *buf = rest;
            Some(Node {
                id: u64::from_le_bytes(*id),
                depth: u32::from_le_bytes(*depth),
                fanout: u32::from_le_bytes(*fanout),
            })
        }
    }

    /// Records every processed id (sum and count) so exactly-once can be checked.
    struct Recorder {
        seen: Arc<(AtomicU64, AtomicU64)>,
        spin: u32,
    }

    impl Worker<Node> for Recorder {
        fn process(&mut self, n: Node, spawn: &mut Spawner<'_, Node>) {
            self.seen.0.fetch_add(1, Ordering::Relaxed);
            self.seen.1.fetch_add(n.id, Ordering::Relaxed);
            // A little work per item, so steals interleave with processing.
            let mut x = n.id;
            for _ in 0..self.spin {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            if n.depth > 0 {
                for c in 0..n.fanout {
                    spawn.push(Node {
                        id: n.id * 16 + u64::from(c) + 1,
                        depth: n.depth - 1,
                        fanout: n.fanout,
                    });
                }
            }
        }
    }

    /// Count and id-sum of the subtree under `n`, computed directly.
    fn expected(n: Node) -> (u64, u64) {
        let mut stack = vec![n];
        let (mut count, mut sum) = (0u64, 0u64);
        while let Some(n) = stack.pop() {
            count += 1;
            sum += n.id;
            if n.depth > 0 {
                for c in 0..n.fanout {
                    stack.push(Node {
                        id: n.id * 16 + u64::from(c) + 1,
                        depth: n.depth - 1,
                        fanout: n.fanout,
                    });
                }
            }
        }
        (count, sum)
    }

    fn run_job(
        ranks: usize,
        threads: usize,
        initial: Vec<Node>,
        spin: u32,
    ) -> (u64, u64, Vec<StealStats>) {
        let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let mut initial = Some(initial);
        let handles: Vec<_> = transports(ranks)
            .into_iter()
            .map(|mut t| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| Recorder {
                        seen: seen.clone(),
                        spin,
                    })
                    .collect();
                let start = if t.rank == 0 {
                    initial.take().unwrap()
                } else {
                    Vec::new()
                };
                std::thread::spawn(move || {
                    run_rank(&mut t, workers, start, StealConfig::default(), &Silent).1
                })
            })
            .collect();
        let stats = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (
            seen.0.load(Ordering::Relaxed),
            seen.1.load(Ordering::Relaxed),
            stats,
        )
    }

    #[test]
    fn one_rank_processes_everything_once() {
        let root = Node {
            id: 0,
            depth: 6,
            fanout: 5,
        };
        let (count, sum, _) = run_job(1, 3, vec![root], 0);
        assert_eq!((count, sum), expected(root));
    }

    #[test]
    fn uneven_work_terminates_exactly_once_on_every_rank_count() {
        // Almost everything hangs under one child of the root: the other ranks must steal it.
        let big = Node {
            id: 1,
            depth: 7,
            fanout: 4,
        };
        let small = Node {
            id: 2,
            depth: 0,
            fanout: 0,
        };
        let (want_count, want_sum) = {
            let (a, b) = expected(big);
            let (c, d) = expected(small);
            (a + c, b + d)
        };
        for ranks in [2, 3, 5, 8] {
            let (count, sum, stats) = run_job(ranks, 2, vec![small, big], 200);
            assert_eq!((count, sum), (want_count, want_sum), "{ranks} ranks");
            let stolen: u64 = stats.iter().map(|s| s.items_stolen).sum();
            let given: u64 = stats.iter().map(|s| s.items_given).sum();
            assert_eq!(stolen, given, "every item given away arrived");
            assert!(
                stats[1..].iter().any(|s| s.items_processed > 0),
                "no other rank got work: {stats:?}"
            );
        }
    }

    #[test]
    fn no_work_at_all_terminates() {
        let (count, _, _) = run_job(4, 1, Vec::new(), 0);
        assert_eq!(count, 0);
    }

    #[test]
    fn repeated_runs_never_lose_or_duplicate_work() {
        // Races show up as rare failures: run many small jobs with tiny items.
        let root = Node {
            id: 0,
            depth: 4,
            fanout: 6,
        };
        for i in 0..30 {
            let (count, sum, _) = run_job(2 + i % 4, 1 + i % 2, vec![root], 0);
            assert_eq!((count, sum), expected(root), "run {i}");
        }
    }

    /// One long item that publishes its children as it goes, like a huge directory.
    struct Publisher {
        seen: Arc<(AtomicU64, AtomicU64)>,
        per_rank: Arc<AtomicU64>,
    }

    impl Worker<Node> for Publisher {
        fn process(&mut self, n: Node, spawn: &mut Spawner<'_, Node>) {
            self.seen.0.fetch_add(1, Ordering::Relaxed);
            self.seen.1.fetch_add(n.id, Ordering::Relaxed);
            self.per_rank.fetch_add(1, Ordering::Relaxed);
            if n.id == 0 {
                for batch in 0..10u64 {
                    for c in 0..10 {
                        spawn.push(Node {
                            id: 1 + batch * 10 + c,
                            depth: 0,
                            fanout: 0,
                        });
                    }
                    spawn.publish();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn work_published_mid_item_is_taken_by_other_ranks() {
        let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counts: Vec<_> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let handles: Vec<_> = transports(2)
            .into_iter()
            .map(|mut t| {
                // One worker thread per rank: rank 0's only thread is busy with the long item.
                let worker = Publisher {
                    seen: seen.clone(),
                    per_rank: counts[t.rank].clone(),
                };
                let start = if t.rank == 0 {
                    vec![Node {
                        id: 0,
                        depth: 0,
                        fanout: 0,
                    }]
                } else {
                    Vec::new()
                };
                std::thread::spawn(move || {
                    run_rank(&mut t, vec![worker], start, StealConfig::default(), &Silent)
                })
            })
            .collect();
        handles.into_iter().for_each(|h| drop(h.join().unwrap()));
        assert_eq!(seen.0.load(Ordering::Relaxed), 101);
        assert_eq!(seen.1.load(Ordering::Relaxed), (0..=100).sum::<u64>());
        assert!(
            counts[1].load(Ordering::Relaxed) > 0,
            "rank 1 took published work while rank 0 was busy"
        );
    }

    /// Counts processed items (via the recorder's shared counter) and keeps rank 0's reports.
    struct Reports {
        processed: Arc<(AtomicU64, AtomicU64)>,
        seen: std::sync::Mutex<Vec<(Vec<RankProgress>, Vec<bool>)>>,
    }

    impl Status for Reports {
        fn progress(&self) -> RankProgress {
            RankProgress {
                entries: self.processed.0.load(Ordering::Relaxed),
                apparent_bytes: 0,
                errors: 7,
            }
        }
        fn report(&self, ranks: &[RankProgress], busy: &[bool]) {
            self.seen
                .lock()
                .unwrap()
                .push((ranks.to_vec(), busy.to_vec()));
        }
    }

    #[test]
    fn rank_0_reports_every_ranks_counters_while_the_run_goes_on() {
        let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let config = StealConfig {
            progress_interval: Duration::from_millis(2),
            ..StealConfig::default()
        };
        let root = Node {
            id: 0,
            depth: 7,
            fanout: 4,
        };
        let statuses: Vec<Arc<Reports>> = (0..3)
            .map(|_| {
                Arc::new(Reports {
                    processed: seen.clone(),
                    seen: Default::default(),
                })
            })
            .collect();
        let handles: Vec<_> = transports(3)
            .into_iter()
            .map(|mut t| {
                let workers = vec![Recorder {
                    seen: seen.clone(),
                    spin: 2000,
                }];
                let start = if t.rank == 0 { vec![root] } else { Vec::new() };
                let status = statuses[t.rank].clone();
                std::thread::spawn(move || {
                    drop(run_rank(&mut t, workers, start, config, status.as_ref()))
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let reports = statuses[0].seen.lock().unwrap();
        assert!(!reports.is_empty(), "rank 0 reported");
        assert!(
            reports
                .iter()
                .all(|(ranks, busy)| ranks.len() == 3 && busy.len() == 3)
        );
        assert!(
            reports
                .iter()
                .any(|(ranks, _)| ranks[1..].iter().any(|c| c.errors == 7)),
            "counters from other ranks arrived"
        );
        assert!(
            statuses[1].seen.lock().unwrap().is_empty(),
            "only rank 0 reports"
        );
        assert_eq!(seen.0.load(Ordering::Relaxed), expected(root).0);
    }

    #[test]
    fn steal_replies_respect_the_byte_budget() {
        let pool = Pool::new(
            (0..100)
                .map(|id| Node {
                    id,
                    depth: 0,
                    fanout: 0,
                })
                .collect(),
        );
        assert_eq!(pool.give_away(1000, 16 * 10).len(), 10);
        assert_eq!(pool.give_away(1000, 1).len(), 1, "at least one item");
        assert_eq!(pool.give_away(3, usize::MAX).len(), 3);
        assert_eq!(
            pool.give_away(1000, usize::MAX).len(),
            43,
            "half of the 86 left"
        );
    }
}
