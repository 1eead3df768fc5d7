//! The metadata server's service model, without FUSE: `cap` service threads, each holding one
//! request for `latency`; a request that finds every thread busy waits, first come first served,
//! and starts when a thread frees. [`Service`] is the pure queue (deadlines in a min-heap, the
//! waiting line in a deque, time passed in); [`Timer`] runs it on one thread and calls each
//! request's reply at its deadline, so the FUSE request loop never sleeps.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests in service (at most `cap`, ordered by deadline) and the line waiting for a thread.
/// Each operation is O(log cap); memory grows with the requests in flight, which the kernel
/// bounds by the threads calling into the mount.
pub struct Service<T> {
    latency: Duration,
    cap: usize,
    serving: BinaryHeap<Serving<T>>,
    waiting: VecDeque<(Instant, T)>,
    seq: u64,
}

struct Serving<T> {
    done: Instant,
    seq: u64,
    item: T,
}

// Reversed, so that the max-heap pops the earliest deadline; `seq` keeps equal deadlines FIFO.
impl<T> Ord for Serving<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.done, other.seq).cmp(&(self.done, self.seq))
    }
}
impl<T> PartialOrd for Serving<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> PartialEq for Serving<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Serving<T> {}

impl<T> std::fmt::Debug for Service<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("latency", &self.latency)
            .field("cap", &self.cap)
            .field("serving", &self.serving.len())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl<T> Service<T> {
    /// `cap` is raised to 1: a server with no service thread would never answer.
    pub fn new(latency: Duration, cap: usize) -> Self {
        Self {
            latency,
            cap: cap.max(1),
            serving: BinaryHeap::new(),
            waiting: VecDeque::new(),
            seq: 0,
        }
    }

    /// A request arrives at `now`: it starts at once if a thread is free, else it waits.
    pub fn submit(&mut self, now: Instant, item: T) {
        if self.serving.len() < self.cap {
            self.start(now, item);
        } else {
            self.waiting.push_back((now, item));
        }
    }

    fn start(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.serving.push(Serving {
            done: at + self.latency,
            seq: self.seq,
            item,
        });
    }

    /// The earliest deadline of a request in service.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.serving.peek().map(|s| s.done)
    }

    /// Moves every request whose deadline is at or before `now` to `out`, in deadline order.
    /// Each freed thread takes the next waiting request from the moment it freed (or the
    /// request's arrival, if later), not from `now`: a late timer does not lengthen the queue.
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<T>) {
        while self.serving.peek().is_some_and(|s| s.done <= now) {
            let Some(done) = self.serving.pop() else {
                break;
            };
            out.push(done.item);
            if let Some((arrived, next)) = self.waiting.pop_front() {
                self.start(done.done.max(arrived), next);
            }
        }
    }

    /// Requests in service.
    pub fn serving(&self) -> usize {
        self.serving.len()
    }

    /// Requests waiting for a thread.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests in flight: in service plus waiting.
    pub fn in_flight(&self) -> usize {
        self.serving.len() + self.waiting.len()
    }
}

/// A reply to send at its deadline.
pub type Pending = Box<dyn FnOnce() + Send>;

/// How many requests were in flight, seen by each arriving request (itself included).
#[derive(Debug, Clone, Default)]
pub struct Concurrency {
    /// In flight now (in service plus waiting).
    pub in_flight: usize,
    /// Waiting for a service thread now.
    pub waiting: usize,
    /// The most in flight at once.
    pub max_in_flight: usize,
    /// The most waiting at once.
    pub max_waiting: usize,
    /// Requests delayed so far.
    pub requests: u64,
    /// Sum over requests of the in-flight count each saw on arrival (for the mean).
    pub sum_in_flight: u64,
    /// `histogram[b]`: requests that saw an in-flight count in [2^b, 2^(b+1)).
    pub histogram: [u64; 16],
}

impl Concurrency {
    fn arrived(&mut self, in_flight: usize, waiting: usize) {
        self.in_flight = in_flight;
        self.waiting = waiting;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        self.max_waiting = self.max_waiting.max(waiting);
        self.requests += 1;
        self.sum_in_flight += in_flight as u64;
        let bucket = (usize::BITS - 1 - in_flight.max(1).leading_zeros()) as usize;
        self.histogram[bucket.min(self.histogram.len() - 1)] += 1;
    }

    /// The mean in-flight count seen by an arriving request.
    pub fn mean_in_flight(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.sum_in_flight as f64 / self.requests as f64
        }
    }
}

struct State {
    service: Service<Pending>,
    seen: Concurrency,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// [`Service`] on a thread of its own: `delay` queues a reply and returns at once; the thread
/// sleeps until the earliest deadline and sends every reply that is due.
pub struct Timer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Timer {
    pub fn start(latency: Duration, cap: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                service: Service::new(latency, cap),
                seen: Concurrency::default(),
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("lab-timer".into())
                .spawn(move || run(&shared))?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `reply` to be called once the request has been served.
    pub fn delay(&self, reply: Pending) {
        let mut state = lock(&self.shared.state);
        let before = state.service.next_deadline();
        state.service.submit(Instant::now(), reply);
        let (in_flight, waiting) = (state.service.in_flight(), state.service.waiting());
        state.seen.arrived(in_flight, waiting);
        let after = state.service.next_deadline();
        drop(state);
        // The timer sleeps until the earliest deadline: wake it only if that moved.
        if after != before {
            self.shared.wake.notify_one();
        }
    }

    /// The concurrency seen so far.
    pub fn concurrency(&self) -> Concurrency {
        self.probe().concurrency()
    }

    /// A handle that reads the concurrency from elsewhere (the timer itself belongs to the
    /// filesystem, which the FUSE session owns).
    pub fn probe(&self) -> Probe {
        Probe {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Reads a [`Timer`]'s concurrency.
#[derive(Debug, Clone)]
pub struct Probe {
    shared: Arc<Shared>,
}

impl Probe {
    /// The concurrency seen so far.
    pub fn concurrency(&self) -> Concurrency {
        let state = lock(&self.shared.state);
        let mut seen = state.seen.clone();
        seen.in_flight = state.service.in_flight();
        seen.waiting = state.service.waiting();
        seen
    }
}

impl Drop for Timer {
    /// Stops the thread; replies still queued are dropped (fuser answers a dropped reply EIO).
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(shared: &Shared) {
    // The default timer slack (50 us) would add to every deadline; 1 us keeps them close.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let mut due = Vec::new();
    loop {
        let mut state = lock(&shared.state);
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            state.service.pop_due(now, &mut due);
            if !due.is_empty() {
                break;
            }
            state = match state.service.next_deadline() {
                Some(deadline) => {
                    shared
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
        drop(state);
        for reply in due.drain(..) {
            reply();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn due(service: &mut Service<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        service.pop_due(now, &mut out);
        out
    }

    #[test]
    fn deadlines_come_out_in_order_and_not_before_time() {
        let t0 = Instant::now();
        let mut service = Service::new(10 * MS, 100);
        // Arrivals out of order of id; deadlines follow arrival.
        service.submit(t0 + 3 * MS, 3);
        service.submit(t0, 0);
        service.submit(t0 + MS, 1);
        service.submit(t0 + MS, 2);
        assert_eq!(service.next_deadline(), Some(t0 + 10 * MS));
        assert!(due(&mut service, t0 + 9 * MS).is_empty());
        assert_eq!(due(&mut service, t0 + 11 * MS), vec![0, 1, 2]);
        assert_eq!(service.next_deadline(), Some(t0 + 13 * MS));
        assert_eq!(due(&mut service, t0 + 100 * MS), vec![3]);
        assert_eq!(service.in_flight(), 0);
        assert_eq!(service.next_deadline(), None);
    }

    #[test]
    fn the_cap_holds_and_the_line_is_first_come_first_served() {
        let t0 = Instant::now();
        let mut service = Service::new(10 * MS, 2);
        for id in 0..5 {
            service.submit(t0, id);
        }
        assert_eq!((service.serving(), service.waiting()), (2, 3));
        // Two threads: 0 and 1 finish at 10 ms, 2 and 3 start then and finish at 20 ms, 4 at 30.
        assert_eq!(due(&mut service, t0 + 10 * MS), vec![0, 1]);
        assert_eq!((service.serving(), service.waiting()), (2, 1));
        assert_eq!(service.next_deadline(), Some(t0 + 20 * MS));
        // A late timer: everything due by 35 ms comes out at once, in order, never over the cap.
        assert_eq!(due(&mut service, t0 + 35 * MS), vec![2, 3, 4]);
        assert_eq!(service.in_flight(), 0);
    }

    #[test]
    fn a_freed_thread_serves_a_later_arrival_from_its_arrival() {
        let t0 = Instant::now();
        let mut service = Service::new(10 * MS, 1);
        service.submit(t0, 0);
        service.submit(t0 + 15 * MS, 1); // arrives after 0's deadline, before the timer ran
        assert_eq!(due(&mut service, t0 + 16 * MS), vec![0]);
        assert_eq!(service.next_deadline(), Some(t0 + 25 * MS));
    }

    #[test]
    fn the_timer_replies_after_the_latency_and_counts_what_it_saw() {
        let timer = Timer::start(20 * MS, 4).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        for id in 0..8 {
            let tx = tx.clone();
            timer.delay(Box::new(move || tx.send((id, Instant::now())).unwrap()));
        }
        let mut got: Vec<(i32, Instant)> = (0..8).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|&(id, _)| id);
        // Four threads: the first four after one latency, the next four after two.
        for &(id, at) in &got {
            let waited = at - t0;
            let rounds = if id < 4 { 1 } else { 2 };
            assert!(waited >= rounds * 20 * MS, "{id} replied after {waited:?}");
        }
        let seen = timer.concurrency();
        assert_eq!(seen.requests, 8);
        assert_eq!(seen.max_in_flight, 8);
        assert_eq!(seen.max_waiting, 4);
        assert_eq!(seen.in_flight, 0);
        assert_eq!(seen.histogram[..4], [1, 2, 4, 1]);
    }
}
