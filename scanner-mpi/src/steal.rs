//! Work stealing across ranks and threads, with proven termination detection.
//!
//! Each rank runs worker threads that share one local pool, and one coordinator thread (the
//! caller of [`run_rank`]) that alone talks to the other ranks through a [`Transport`]: the
//! "funneled" MPI model, which MPICH and Open MPI both support.
//!
//! - **Within a rank** workers pop from the back of the pool (depth first: the pool stays
//!   small, since a directory's children are finished before its siblings' subtrees grow it).
//! - **Across ranks** an idle rank asks a random victim for work; the victim gives half of its
//!   pool from the front (the shallowest items: the largest subtrees, so one steal buys much
//!   work) or says it has none. Only the reply to a request ever carries work.
//! - **Termination** is Safra's algorithm (Dijkstra's token ring extended to asynchronous
//!   messages): every rank counts work messages sent minus received and turns black when it
//!   receives work; rank 0 circulates a token while passive and declares the end when the token
//!   returns white with a zero sum. No timeout is involved anywhere.
//! - **Shutdown** leaves no message in flight: rank 0 sends `Terminate`; each rank waits for the
//!   answer to its last steal request, then reports `Done`; once rank 0 has every `Done`
//!   (nobody is asking anyone for anything any more) it sends `Exit`. Ranks keep answering
//!   requests until `Exit`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Something a rank can do and hand to another rank.
pub trait Work: Send + Sized {
    /// Bytes `encode` writes, to bound the size of a steal reply.
    fn encoded_len(&self) -> usize;
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one item from the front of `buf`, advancing it.
    fn decode(buf: &mut &[u8]) -> Option<Self>;
}

/// Point-to-point messaging between the ranks of one job.
pub trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sends without waiting for the receiver to act on it.
    fn send(&mut self, dest: usize, msg: Vec<u8>);
    /// A message addressed to this rank, if one has arrived.
    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)>;
}

/// A worker thread's processing of items; it may produce more items.
pub trait Worker<W>: Send {
    fn process(&mut self, item: W, spawn: &mut Spawner<'_, W>);
}

/// Where a worker puts the items it produces. They reach the pool when the current item is
/// finished, or earlier with [`Spawner::publish`] (a long item shares its work as it goes).
pub struct Spawner<'p, W> {
    pool: &'p Pool<W>,
    pending: Vec<W>,
}

impl<W> std::fmt::Debug for Spawner<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<W> Spawner<'_, W> {
    pub fn push(&mut self, item: W) {
        self.pending.push(item);
    }

    /// Makes the items pushed so far available to other threads and ranks now.
    pub fn publish(&mut self) {
        if !self.pending.is_empty() {
            self.pool.add(self.pending.drain(..));
        }
    }
}

/// Counters every rank sends to rank 0 while the run goes on.
pub type Counters = [u64; 4];

/// Progress of a run: what each rank counts, and what rank 0 does with everyone's counts.
pub trait Status: Sync {
    /// This rank's counters now.
    fn counters(&self) -> Counters;
    /// Rank 0 only, every progress interval: the latest counters of every rank and whether
    /// it has work.
    fn report(&self, ranks: &[Counters], busy: &[bool]);
}

/// A run that reports nothing.
#[derive(Debug)]
pub struct Silent;

impl Status for Silent {
    fn counters(&self) -> Counters {
        [0; 4]
    }
    fn report(&self, _: &[Counters], _: &[bool]) {}
}

/// Counters a rank reports after the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StealStats {
    pub items_processed: u64,
    pub steal_requests_sent: u64,
    pub items_stolen: u64,
    pub items_given: u64,
    pub probes: u64,
}

/// Tuning of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct StealConfig {
    /// Most items given away in one reply.
    pub max_items_per_steal: usize,
    /// Most encoded bytes in one reply (at least one item is always given).
    pub max_bytes_per_steal: usize,
    /// Longest sleep of an idle coordinator between polls of the transport.
    pub max_poll_interval: Duration,
    /// How often ranks send their counters to rank 0, which reports them.
    pub progress_interval: Duration,
}

impl Default for StealConfig {
    fn default() -> Self {
        Self {
            max_items_per_steal: 4096,
            max_bytes_per_steal: 4 << 20,
            max_poll_interval: Duration::from_micros(500),
            progress_interval: Duration::from_secs(10),
        }
    }
}

const MSG_STEAL_REQUEST: u8 = 1;
const MSG_WORK: u8 = 2;
const MSG_NO_WORK: u8 = 3;
const MSG_TOKEN: u8 = 4;
const MSG_TERMINATE: u8 = 5;
const MSG_DONE: u8 = 6;
const MSG_EXIT: u8 = 7;
/// A rank's counters for rank 0; not work, so not counted by the termination detection.
const MSG_PROGRESS: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Color {
    White,
    Black,
}

/// Safra's termination-detection state of one rank.
#[derive(Debug)]
struct Safra {
    color: Color,
    /// Work messages sent minus work messages received.
    count: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    color: Color,
    sum: i64,
}

impl Token {
    fn encode(self) -> Vec<u8> {
        let mut m = vec![MSG_TOKEN, (self.color == Color::Black) as u8];
        m.extend_from_slice(&self.sum.to_le_bytes());
        m
    }

    fn decode(body: &[u8]) -> Option<Self> {
        let (&color, sum) = body.split_first()?;
        let sum = i64::from_le_bytes(sum.try_into().ok()?);
        Some(Self {
            color: if color == 1 {
                Color::Black
            } else {
                Color::White
            },
            sum,
        })
    }
}

struct PoolState<W> {
    items: VecDeque<W>,
    /// Workers holding an item.
    busy: usize,
    /// Workers waiting for an item.
    waiting: usize,
    quit: bool,
}

/// The items of one rank, shared by its workers and its coordinator.
///
/// Wake-ups cost a system call and a context switch, so they happen only when someone waits
/// for them: a worker when items arrive while it waits, the coordinator when the rank runs out
/// of work (it polls the other ranks on a timer otherwise).
struct Pool<W> {
    state: Mutex<PoolState<W>>,
    /// Workers wait here for items.
    work: Condvar,
    /// The coordinator waits here for the rank to run out of work.
    idle: Condvar,
}

impl<W> Pool<W> {
    fn new(initial: Vec<W>) -> Self {
        Self {
            state: Mutex::new(PoolState {
                items: initial.into(),
                busy: 0,
                waiting: 0,
                quit: false,
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<W>> {
        // A panicking worker poisons the lock; the quit guard still needs the state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks for the next item; `None` once the rank quits.
    fn take(&self) -> Option<W> {
        let mut s = self.lock();
        loop {
            if s.quit {
                return None;
            }
            if let Some(item) = s.items.pop_back() {
                s.busy += 1;
                return Some(item);
            }
            s.waiting += 1;
            s = self.work.wait(s).unwrap_or_else(|e| e.into_inner());
            s.waiting -= 1;
        }
    }

    /// Wakes as many waiting workers as there are new items, once the lock is released.
    fn wake(&self, s: MutexGuard<'_, PoolState<W>>, new_items: usize) {
        let wake = new_items.min(s.waiting);
        let idle = s.busy == 0 && s.items.is_empty();
        drop(s);
        match wake {
            0 => {}
            1 => self.work.notify_one(),
            _ => self.work.notify_all(),
        }
        if idle {
            self.idle.notify_all();
        }
    }

    /// Returns a worker's item as finished, with the items it produced.
    fn finish(&self, spawned: &mut Vec<W>) {
        let mut s = self.lock();
        s.busy -= 1;
        let n = spawned.len();
        s.items.extend(spawned.drain(..));
        self.wake(s, n);
    }

    fn add(&self, items: impl IntoIterator<Item = W>) {
        let mut s = self.lock();
        let before = s.items.len();
        s.items.extend(items);
        let n = s.items.len() - before;
        self.wake(s, n);
    }

    /// Half of the queued items, from the front (shallowest first), within the limits.
    fn give_away(&self, max_items: usize, max_bytes: usize) -> Vec<W>
    where
        W: Work,
    {
        let mut s = self.lock();
        let half = s.items.len().div_ceil(2).min(max_items);
        let mut bytes = 0;
        let mut n = 0;
        while n < half {
            bytes += s.items[n].encoded_len();
            if n > 0 && bytes > max_bytes {
                break;
            }
            n += 1;
        }
        s.items.drain(..n).collect()
    }

    fn is_idle(&self) -> bool {
        let s = self.lock();
        s.busy == 0 && s.items.is_empty()
    }

    /// Sleeps until the rank runs out of work or `timeout` passes.
    fn wait_idle(&self, timeout: Duration) {
        let s = self.lock();
        if s.busy == 0 && s.items.is_empty() {
            return;
        }
        drop(
            self.idle
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }

    fn quit(&self) {
        self.lock().quit = true;
        self.work.notify_all();
        self.idle.notify_all();
    }
}

/// Sets the pool's quit flag when dropped, so a panic anywhere stops every worker.
struct QuitOnDrop<'a, W>(&'a Pool<W>);

impl<W> Drop for QuitOnDrop<'_, W> {
    fn drop(&mut self) {
        self.0.quit();
    }
}

/// A small xorshift generator: victim choice needs speed and spread, not quality.
struct VictimPicker(u64);

impl VictimPicker {
    fn new(rank: usize) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ (rank as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn pick(&mut self, me: usize, size: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let other = (self.0 % (size as u64 - 1)) as usize;
        if other >= me { other + 1 } else { other }
    }
}

fn encode_progress(passive: bool, counters: Counters) -> Vec<u8> {
    let mut m = vec![MSG_PROGRESS, u8::from(passive)];
    counters
        .iter()
        .for_each(|c| m.extend_from_slice(&c.to_le_bytes()));
    m
}

fn decode_progress(body: &[u8]) -> Option<(bool, Counters)> {
    let (&passive, mut rest) = body.split_first()?;
    let mut counters = [0u64; 4];
    for c in &mut counters {
        let (v, r) = rest.split_first_chunk::<8>()?;
        *c = u64::from_le_bytes(*v);
        rest = r;
    }
    Some((passive == 1, counters))
}

fn encode_work<W: Work>(items: &[W]) -> Vec<u8> {
    let mut m = vec![MSG_WORK];
    m.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        item.encode(&mut m);
    }
    m
}

fn decode_work<W: Work>(mut body: &[u8]) -> Vec<W> {
    let Some((n, rest)) = body.split_first_chunk::<4>() else {
        panic!("work message without a count");
    };
    let n = u32::from_le_bytes(*n) as usize;
    body = rest;
    (0..n)
        .map(|_| W::decode(&mut body).expect("well-formed work item from a peer rank"))
        .collect()
}

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
    let mut stats = StealStats::default();
    let workers = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut worker| {
                let pool = &pool;
                scope.spawn(move || {
                    let _guard = QuitOnDrop(pool);
                    let mut spawner = Spawner {
                        pool,
                        pending: Vec::new(),
                    };
                    let mut processed = 0u64;
                    while let Some(item) = pool.take() {
                        worker.process(item, &mut spawner);
                        processed += 1;
                        pool.finish(&mut spawner.pending);
                    }
                    (worker, processed)
                })
            })
            .collect();
        {
            let _guard = QuitOnDrop(&pool);
            coordinate(transport, &pool, config, status, &mut stats);
        }
        handles
            .into_iter()
            .map(|h| {
                let (worker, processed) = h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                stats.items_processed += processed;
                worker
            })
            .collect()
    });
    (workers, stats)
}

/// The coordinator's loop: serve peers, steal when idle, detect termination, shut down cleanly.
fn coordinate<W: Work, T: Transport>(
    t: &mut T,
    pool: &Pool<W>,
    config: StealConfig,
    status: &dyn Status,
    stats: &mut StealStats,
) {
    let (me, size) = (t.rank(), t.size());
    let mut next_progress = Instant::now() + config.progress_interval;
    if size == 1 {
        // Nobody to serve or steal from: sleep until the work runs out or a report is due.
        while !pool.is_idle() {
            pool.wait_idle(next_progress.saturating_duration_since(Instant::now()));
            if Instant::now() >= next_progress {
                next_progress += config.progress_interval;
                status.report(&[status.counters()], &[true]);
            }
        }
        return;
    }
    // Rank 0's view of every rank's latest counters and whether it has work.
    let mut latest: Vec<Counters> = vec![[0; 4]; if me == 0 { size } else { 0 }];
    let mut busy: Vec<bool> = vec![true; latest.len()];
    let mut safra = Safra {
        color: Color::White,
        count: 0,
    };
    let mut token: Option<Token> = None;
    // Rank 0 only: a probe's token is out on the ring.
    let mut probing = false;
    let mut steal_outstanding = false;
    let mut terminating = false;
    let mut sent_done = false;
    let mut dones = 0usize;
    let mut victims = VictimPicker::new(me);
    let mut idle_polls = 0u32;

    loop {
        let mut progressed = false;
        while let Some((src, msg)) = t.try_recv() {
            progressed = true;
            let Some((&kind, body)) = msg.split_first() else {
                continue;
            };
            match kind {
                MSG_STEAL_REQUEST => {
                    let items = if terminating {
                        Vec::new()
                    } else {
                        pool.give_away(config.max_items_per_steal, config.max_bytes_per_steal)
                    };
                    tracing::debug!(
                        rank = me,
                        thief = src,
                        items = items.len(),
                        "steal request served"
                    );
                    if items.is_empty() {
                        t.send(src, vec![MSG_NO_WORK]);
                    } else {
                        stats.items_given += items.len() as u64;
                        safra.count += 1;
                        t.send(src, encode_work(&items));
                    }
                }
                MSG_WORK => {
                    let items: Vec<W> = decode_work(body);
                    tracing::debug!(rank = me, victim = src, items = items.len(), "work stolen");
                    stats.items_stolen += items.len() as u64;
                    safra.count -= 1;
                    safra.color = Color::Black;
                    steal_outstanding = false;
                    pool.add(items);
                }
                MSG_NO_WORK => steal_outstanding = false,
                MSG_TOKEN => token = Some(Token::decode(body).expect("well-formed token")),
                MSG_TERMINATE => terminating = true,
                MSG_DONE => dones += 1,
                MSG_EXIT => return,
                MSG_PROGRESS if me == 0 => {
                    if let Some((passive, counters)) = decode_progress(body) {
                        latest[src] = counters;
                        busy[src] = !passive;
                    }
                }
                other => panic!("unknown message kind {other} from rank {src}"),
            }
        }

        let passive = pool.is_idle();
        if !terminating && Instant::now() >= next_progress {
            next_progress += config.progress_interval;
            if me == 0 {
                latest[0] = status.counters();
                busy[0] = !passive;
                status.report(&latest, &busy);
            } else {
                t.send(0, encode_progress(passive, status.counters()));
            }
        }
        if terminating {
            if !steal_outstanding && !sent_done {
                sent_done = true;
                if me == 0 {
                    dones += 1;
                } else {
                    t.send(0, vec![MSG_DONE]);
                }
            }
            if me == 0 && dones == size {
                for dest in 1..size {
                    t.send(dest, vec![MSG_EXIT]);
                }
                return;
            }
        } else if passive {
            if !steal_outstanding {
                t.send(victims.pick(me, size), vec![MSG_STEAL_REQUEST]);
                stats.steal_requests_sent += 1;
                steal_outstanding = true;
            }
            if me == 0 {
                if let Some(back) = token.take() {
                    probing = false;
                    if back.color == Color::White
                        && safra.color == Color::White
                        && back.sum + safra.count == 0
                    {
                        terminating = true;
                        tracing::debug!(probes = stats.probes, "termination detected");
                        for dest in 1..size {
                            t.send(dest, vec![MSG_TERMINATE]);
                        }
                        continue;
                    }
                }
                if !probing {
                    probing = true;
                    stats.probes += 1;
                    safra.color = Color::White;
                    t.send(
                        size - 1,
                        Token {
                            color: Color::White,
                            sum: 0,
                        }
                        .encode(),
                    );
                }
            } else if let Some(mut held) = token.take() {
                held.sum += safra.count;
                if safra.color == Color::Black {
                    held.color = Color::Black;
                }
                safra.color = Color::White;
                t.send(me - 1, held.encode());
            }
        }

        if progressed {
            idle_polls = 0;
        } else {
            // Back off from a tight poll to the configured interval while nothing happens.
            idle_polls = (idle_polls + 1).min(16);
            let wait = Duration::from_micros(1 << idle_polls.min(10)).min(config.max_poll_interval);
            if passive {
                // Nothing here will change: only a message can bring work.
                std::thread::sleep(wait);
            } else {
                // Working: poll again after `wait`, or at once when the work runs out.
                pool.wait_idle(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;

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
        seen: std::sync::Mutex<Vec<(Vec<Counters>, Vec<bool>)>>,
    }

    impl Status for Reports {
        fn counters(&self) -> Counters {
            [self.processed.0.load(Ordering::Relaxed), 0, 0, 7]
        }
        fn report(&self, ranks: &[Counters], busy: &[bool]) {
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
                .any(|(ranks, _)| ranks[1..].iter().any(|c| c[3] == 7)),
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

    #[test]
    fn token_encoding_round_trips() {
        for t in [
            Token {
                color: Color::White,
                sum: 0,
            },
            Token {
                color: Color::Black,
                sum: -42,
            },
        ] {
            let m = t.encode();
            assert_eq!(m[0], MSG_TOKEN);
            assert_eq!(Token::decode(&m[1..]), Some(t));
        }
    }

    #[test]
    fn victims_are_never_self_and_cover_every_peer() {
        let mut p = VictimPicker::new(2);
        let mut hit = [0u32; 5];
        for _ in 0..1000 {
            hit[p.pick(2, 5)] += 1;
        }
        assert_eq!(hit[2], 0);
        assert!(
            hit.iter().enumerate().all(|(i, &h)| i == 2 || h > 100),
            "{hit:?}"
        );
    }
}
