//! The metadata server's service model, without FUSE: `cap` service threads, each holding one
//! request for `latency`; a request that finds every thread busy waits, first come first served,
//! and starts when a thread frees. A request may also be held first (a stalled subtree, see
//! [`crate::stall`]): it waits apart, taking no service thread and no place in the line, and
//! arrives at the server when its hold ends. [`Service`] is the pure queue (deadlines and holds
//! in min-heaps, the waiting line in a deque, time passed in); [`Timer`] runs it on one thread
//! and calls each request's reply at its deadline, so the FUSE request loop never sleeps.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests in service (at most `cap`, ordered by deadline), the line waiting for a thread, and
/// the requests held apart until a time (ordered by it). Each operation is O(log n); memory
/// grows with the requests in flight and held, which the kernel bounds by the threads calling
/// into the mount.
pub struct Service<T> {
    latency: Duration,
    cap: usize,
    serving: BinaryHeap<At<T>>,
    waiting: VecDeque<(Instant, T)>,
    /// Held requests: released at `at`; the item carries the request's arrival.
    held: BinaryHeap<At<(Instant, T)>>,
    holds: Holds,
    seq: u64,
}

/// What the holds came to so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holds {
    /// Requests held since the start (released or not).
    pub total: u64,
    /// The longest hold of a request released so far, from its arrival to its release.
    pub longest: Duration,
}

/// An item due at `at`.
struct At<T> {
    at: Instant,
    seq: u64,
    item: T,
}

// Reversed, so that the max-heap pops the earliest time; `seq` keeps equal times FIFO.
impl<T> Ord for At<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl<T> PartialOrd for At<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> PartialEq for At<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for At<T> {}

impl<T> std::fmt::Debug for Service<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("latency", &self.latency)
            .field("cap", &self.cap)
            .field("serving", &self.serving.len())
            .field("waiting", &self.waiting.len())
            .field("held", &self.held.len())
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
            held: BinaryHeap::new(),
            holds: Holds::default(),
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

    /// A request arrives at `now` but is held until `until`, apart from the server: it takes
    /// no service thread and no place in the line while held, and then arrives as if new
    /// (served at once if a thread is free, else at the back of the line). A hold that has
    /// already ended is no hold.
    pub fn hold(&mut self, now: Instant, until: Instant, item: T) {
        if until <= now {
            return self.submit(now, item);
        }
        self.seq += 1;
        self.holds.total += 1;
        self.held.push(At {
            at: until,
            seq: self.seq,
            item: (now, item),
        });
    }

    fn start(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.serving.push(At {
            at: at + self.latency,
            seq: self.seq,
            item,
        });
    }

    /// The next time something is due: a request's deadline or the end of a hold.
    pub fn next_deadline(&self) -> Option<Instant> {
        let serving = self.serving.peek().map(|s| s.at);
        let held = self.held.peek().map(|h| h.at);
        serving.into_iter().chain(held).min()
    }

    /// Moves every request whose deadline is at or before `now` to `out`, in deadline order,
    /// and releases every hold that ended by `now` into the server. Events are taken in time
    /// order (a deadline before a release at the same instant): each freed thread takes the
    /// next waiting request from the moment it freed (or the request's arrival, if later), and
    /// a released request arrives at its release, not at `now`, so a late timer does not
    /// lengthen the queue.
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<T>) {
        loop {
            let done = self.serving.peek().map(|s| s.at).filter(|&t| t <= now);
            let released = self.held.peek().map(|h| h.at).filter(|&t| t <= now);
            match (done, released) {
                (Some(done), released) if released.is_none_or(|r| done <= r) => {
                    let Some(served) = self.serving.pop() else {
                        break;
                    };
                    out.push(served.item);
                    if let Some((arrived, next)) = self.waiting.pop_front() {
                        self.start(done.max(arrived), next);
                    }
                }
                (_, Some(released)) => {
                    let Some(held) = self.held.pop() else {
                        break;
                    };
                    let (arrived, item) = held.item;
                    self.holds.longest = self.holds.longest.max(released - arrived);
                    self.submit(released, item);
                }
                _ => break,
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

    /// Requests in flight: in service plus waiting (not the held ones).
    pub fn in_flight(&self) -> usize {
        self.serving.len() + self.waiting.len()
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// What the holds came to so far.
    pub fn holds(&self) -> Holds {
        self.holds
    }
}

/// A reply to send at its deadline.
pub type Pending = Box<dyn FnOnce() + Send>;

/// How many requests were in flight, seen by each arriving request (itself included), and the
/// requests held (a held request is seen on arrival, in flight or not: it is counted in
/// `requests` and the histogram with the in-flight count of the moment, itself excluded).
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
    /// Held now (not in flight).
    pub held: usize,
    /// What the holds came to so far.
    pub holds: Holds,
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
        self.delay_after(None, reply);
    }

    /// Queues `reply` to be called once the request has been served, held apart until `hold`
    /// first if that is given (see [`Service::hold`]).
    pub fn delay_after(&self, hold: Option<Instant>, reply: Pending) {
        let mut state = lock(&self.shared.state);
        let before = state.service.next_deadline();
        let now = Instant::now();
        match hold {
            Some(until) => state.service.hold(now, until, reply),
            None => state.service.submit(now, reply),
        }
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
        seen.held = state.service.held();
        seen.holds = state.service.holds();
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
    fn a_held_request_takes_no_thread_and_is_served_after_its_hold() {
        let t0 = Instant::now();
        let mut service = Service::new(10 * MS, 1);
        service.hold(t0, t0 + 100 * MS, 0);
        service.submit(t0, 1);
        service.submit(t0, 2);
        // The one thread serves 1 then 2; 0 waits apart, not in the line.
        assert_eq!(
            (service.serving(), service.waiting(), service.held()),
            (1, 1, 1)
        );
        assert_eq!(service.in_flight(), 2);
        assert_eq!(service.next_deadline(), Some(t0 + 10 * MS));
        assert_eq!(due(&mut service, t0 + 20 * MS), vec![1, 2]);
        // Only the hold is left: the next thing due is its end, then its deadline.
        assert_eq!(service.next_deadline(), Some(t0 + 100 * MS));
        assert!(due(&mut service, t0 + 99 * MS).is_empty());
        assert!(due(&mut service, t0 + 105 * MS).is_empty());
        assert_eq!((service.serving(), service.held()), (1, 0));
        assert_eq!(service.next_deadline(), Some(t0 + 110 * MS));
        assert_eq!(due(&mut service, t0 + 110 * MS), vec![0]);
        assert_eq!(
            service.holds(),
            Holds {
                total: 1,
                longest: 100 * MS
            }
        );
    }

    #[test]
    fn a_released_request_arrives_at_its_release_behind_the_line() {
        let t0 = Instant::now();
        let mut service = Service::new(10 * MS, 1);
        service.hold(t0, t0 + 5 * MS, 0);
        for id in 1..4 {
            service.submit(t0, id);
        }
        // 1 is served from 0 to 10 ms; 0, released at 5 ms, waits behind 2 and 3: a late timer
        // (at 45 ms) still serves them in that order, each from when the thread freed.
        assert_eq!(due(&mut service, t0 + 45 * MS), vec![1, 2, 3, 0]);
        assert_eq!(service.in_flight(), 0);
        // A deadline and a release at the same instant: the deadline first, so the freed
        // thread takes the waiting request and the released one waits behind it.
        let mut service = Service::new(10 * MS, 1);
        service.submit(t0, 1);
        service.submit(t0, 2);
        service.hold(t0, t0 + 10 * MS, 0);
        assert_eq!(due(&mut service, t0 + 10 * MS), vec![1]);
        assert_eq!(due(&mut service, t0 + 30 * MS), vec![2, 0]);
        // A hold already over is no hold.
        service.hold(t0 + 40 * MS, t0 + 40 * MS, 9);
        assert_eq!((service.serving(), service.held()), (1, 0));
        assert_eq!(service.holds().total, 1);
    }

    #[test]
    fn the_timer_holds_a_reply_and_serves_the_others_meanwhile() {
        let timer = Timer::start(5 * MS, 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        let held = tx.clone();
        timer.delay_after(
            Some(t0 + 200 * MS),
            Box::new(move || held.send(("held", Instant::now())).unwrap()),
        );
        for _ in 0..4 {
            let tx = tx.clone();
            timer.delay(Box::new(move || {
                tx.send(("other", Instant::now())).unwrap()
            }));
        }
        let got: Vec<(&str, Instant)> = (0..5).map(|_| rx.recv().unwrap()).collect();
        // One thread: the four others are served in turn while the held one waits apart.
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            ["other", "other", "other", "other", "held"]
        );
        assert!(got[3].1 - t0 < 150 * MS, "the others waited for the hold");
        assert!(got[4].1 - t0 >= 205 * MS, "held for {:?}", got[4].1 - t0);
        let seen = timer.concurrency();
        assert_eq!((seen.requests, seen.held, seen.holds.total), (5, 0, 1));
        assert!(seen.holds.longest >= 195 * MS, "{:?}", seen.holds);
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
