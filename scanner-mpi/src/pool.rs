//! A rank's pool of work, shared by its worker threads and its coordinator, and the traits of
//! what a rank works on: [`Work`] (an item that can be handed to another rank) and [`Worker`]
//! (a worker thread's processing of items).
//!
//! Workers pop from the back of the pool (depth first: the pool stays small, since a
//! directory's children are finished before its siblings' subtrees grow it); another rank
//! steals from the front ([`Pool::give_away`]: the shallowest items, the largest subtrees).
//! A panic on any thread sets the pool's quit flag, which stops every worker.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Something a rank can do and hand to another rank: an item of a work message
/// ([`crate::protocol::Message::Work`]).
pub trait Work: Send + Sized {
    /// Bytes `encode` writes, to bound the size of a steal reply.
    fn encoded_len(&self) -> usize;
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one item from the front of `buf`, advancing it.
    fn decode(buf: &mut &[u8]) -> Option<Self>;
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
pub(crate) struct Pool<W> {
    state: Mutex<PoolState<W>>,
    /// Workers wait here for items.
    work: Condvar,
    /// The coordinator waits here for the rank to run out of work.
    idle: Condvar,
}

impl<W> Pool<W> {
    pub(crate) fn new(initial: Vec<W>) -> Self {
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

    pub(crate) fn add(&self, items: impl IntoIterator<Item = W>) {
        let mut s = self.lock();
        let before = s.items.len();
        s.items.extend(items);
        let n = s.items.len() - before;
        self.wake(s, n);
    }

    /// Half of the queued items, from the front (shallowest first), within the limits.
    pub(crate) fn give_away(&self, max_items: usize, max_bytes: usize) -> Vec<W>
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

    pub(crate) fn is_idle(&self) -> bool {
        let s = self.lock();
        s.busy == 0 && s.items.is_empty()
    }

    /// Sleeps until the rank runs out of work or `timeout` passes.
    pub(crate) fn wait_idle(&self, timeout: Duration) {
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

    /// One worker thread's life: takes items and processes them until the rank quits (its
    /// pool is set to quit when this returns or panics). Returns how many it processed.
    pub(crate) fn serve(&self, worker: &mut impl Worker<W>) -> u64 {
        let _guard = QuitOnDrop(self);
        let mut spawner = Spawner {
            pool: self,
            pending: Vec::new(),
        };
        let mut processed = 0u64;
        while let Some(item) = self.take() {
            worker.process(item, &mut spawner);
            processed += 1;
            self.finish(&mut spawner.pending);
        }
        processed
    }
}

/// Sets the pool's quit flag when dropped, so a panic anywhere stops every worker.
pub(crate) struct QuitOnDrop<'a, W>(pub(crate) &'a Pool<W>);

impl<W> Drop for QuitOnDrop<'_, W> {
    fn drop(&mut self) {
        self.0.quit();
    }
}
