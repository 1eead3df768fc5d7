//! One rank's side of sharing work with the other ranks: a `Coordinator` whose methods are
//! the protocol's events (a message arrives, the rank runs out of work, the termination token
//! moves on, a progress report is due), driven by one polling loop on the rank's one thread
//! that talks to the others (the "funneled" MPI model, which MPICH and Open MPI both support).
//! The messages themselves are in [`crate::protocol`].
//!
//! - **Stealing**: an idle rank asks a random victim for work; the victim gives half of its
//!   pool from the front (the shallowest items: the largest subtrees, so one steal buys much
//!   work) or says it has none. Only the reply to a request ever carries work, and a rank has
//!   at most one request out.
//! - **Termination** is Safra's algorithm (Dijkstra's token ring extended to asynchronous
//!   messages): every rank counts work messages sent minus received and turns black when it
//!   receives work; rank 0 circulates a token while passive and declares the end when the token
//!   returns white with a zero sum. No timeout is involved anywhere.
//! - **Shutdown** leaves no message in flight: rank 0 sends `Terminate`; each rank waits for the
//!   answer to its last steal request, then reports `Done`; once rank 0 has every `Done`
//!   (nobody is asking anyone for anything any more) it sends `Exit`. Ranks keep answering
//!   requests until `Exit`.
//! - **Progress**: every progress interval each rank sends its counts to rank 0, which reports
//!   everyone's; these messages are not work, so termination detection ignores them.

use std::time::{Duration, Instant};

use crate::pool::{Pool, StealConfig, StealStats, Work};
use crate::progress::{RankProgress, Status};
use crate::protocol::{Color, Message, Token, Transport};

/// Safra's termination-detection state of one rank.
#[derive(Debug)]
struct Safra {
    color: Color,
    /// Work messages sent minus work messages received.
    count: i64,
}

/// Where a rank is in a run. It only moves forward, in [`Coordinator::begin_shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sharing work. On rank 0, `probing` says that a probe's token is out on the ring.
    Sharing { probing: bool },
    /// The end is known: the rank answers requests with no work, waits for the answer to its
    /// own last request and reports `Done`. Rank 0 counts the ranks done (itself included).
    ShuttingDown { done_sent: bool, dones: usize },
}

/// What the loop does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Carries on: waits a little if nothing happened.
    Wait,
    /// Looks at the transport again at once.
    PollNow,
    /// The run is over for this rank.
    Exit,
}

/// Progress reports: when the next one is due and, on rank 0, every rank's latest counts.
#[derive(Debug)]
struct Reports {
    next: Instant,
    latest: Vec<RankProgress>,
    busy: Vec<bool>,
}

/// How long an idle rank waits before its next steal request after `empty` empty answers in a
/// row: none after the first, then from 100 us doubling to 5 ms.
fn steal_backoff(empty: u32) -> Duration {
    match empty {
        0 | 1 => Duration::ZERO,
        n => Duration::from_micros(50u64 << (n - 1).min(7)).min(Duration::from_millis(5)),
    }
}

/// A small xorshift generator: victim choice needs speed and spread, not quality.
#[derive(Debug)]
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

/// One rank's protocol state, and the pool it shares work from.
pub(crate) struct Coordinator<'r, W, T> {
    transport: &'r mut T,
    pool: &'r Pool<W>,
    status: &'r dyn Status,
    config: StealConfig,
    me: usize,
    size: usize,
    phase: Phase,
    safra: Safra,
    /// The token, while this rank holds it.
    token: Option<Token>,
    /// A steal request of this rank is unanswered.
    steal_outstanding: bool,
    /// Steal requests answered with no work in a row, and when the next may go: an idle rank
    /// asks less often while everyone is idle (the end of a scan, or a tree too small for
    /// its ranks), so that ranks sharing cores leave them to the ones at work.
    empty_steals: u32,
    next_steal: Instant,
    victims: VictimPicker,
    reports: Reports,
    stats: StealStats,
}

impl<'r, W: Work, T: Transport> Coordinator<'r, W, T> {
    pub(crate) fn new(
        transport: &'r mut T,
        pool: &'r Pool<W>,
        config: StealConfig,
        status: &'r dyn Status,
    ) -> Self {
        let (me, size) = (transport.rank(), transport.size());
        let ranks_seen = if me == 0 { size } else { 0 };
        Self {
            transport,
            pool,
            status,
            config,
            me,
            size,
            phase: Phase::Sharing { probing: false },
            safra: Safra {
                color: Color::White,
                count: 0,
            },
            token: None,
            steal_outstanding: false,
            empty_steals: 0,
            next_steal: Instant::now(),
            victims: VictimPicker::new(me),
            reports: Reports {
                next: Instant::now() + config.progress_interval,
                latest: vec![RankProgress::default(); ranks_seen],
                busy: vec![true; ranks_seen],
            },
            stats: StealStats::default(),
        }
    }

    /// Serves peers, steals when idle, detects termination and shuts down cleanly; returns
    /// once this rank may exit.
    pub(crate) fn run(mut self) -> StealStats {
        if self.size == 1 {
            self.run_alone();
            return self.stats;
        }
        let mut idle_polls = 0u32;
        loop {
            let mut progressed = false;
            while let Some((from, bytes)) = self.transport.try_recv() {
                progressed = true;
                let message = Message::decode(&bytes)
                    .unwrap_or_else(|e| panic!("a malformed message from rank {from}: {e}"));
                if self.on_message(from, message) == Next::Exit {
                    return self.stats;
                }
            }

            let passive = self.pool.is_idle();
            if matches!(self.phase, Phase::Sharing { .. }) && Instant::now() >= self.reports.next {
                self.reports.next += self.config.progress_interval;
                self.on_report_due(passive);
            }
            let next = match self.phase {
                Phase::ShuttingDown { .. } => self.on_shutting_down(),
                Phase::Sharing { .. } if passive => self.on_idle(),
                Phase::Sharing { .. } => Next::Wait,
            };
            match next {
                Next::Exit => return self.stats,
                Next::PollNow => continue,
                Next::Wait => {}
            }

            if progressed {
                idle_polls = 0;
            } else {
                // Back off from a tight poll to the configured interval while nothing happens.
                idle_polls = (idle_polls + 1).min(16);
                let wait = Duration::from_micros(1 << idle_polls.min(12));
                if passive {
                    // Idle for a while: the token and the next steal wait a little longer.
                    let wait = wait.min(self.config.max_poll_interval * 4);
                    // Nothing here will change: only a message can bring work.
                    std::thread::sleep(wait);
                } else {
                    // Working: poll again after `wait`, or at once when the work runs out.
                    self.pool.wait_idle(wait.min(self.config.max_poll_interval));
                }
            }
        }
    }

    /// A job of one rank: nobody to serve or steal from. Sleeps until the work runs out or a
    /// report is due.
    fn run_alone(&mut self) {
        while !self.pool.is_idle() {
            self.pool
                .wait_idle(self.reports.next.saturating_duration_since(Instant::now()));
            if Instant::now() >= self.reports.next {
                self.reports.next += self.config.progress_interval;
                self.status.report(&[self.status.progress()], &[true]);
                self.status.report_slow(self.config.progress_interval);
            }
        }
    }

    fn send(&mut self, dest: usize, message: &Message<W>) {
        self.transport.send(dest, message.encode());
    }

    /// A message from rank `from` arrived.
    fn on_message(&mut self, from: usize, message: Message<W>) -> Next {
        match message {
            Message::StealRequest => self.on_steal_request(from),
            Message::Work(items) => self.on_work(from, items),
            Message::NoWork => {
                self.steal_outstanding = false;
                self.empty_steals = self.empty_steals.saturating_add(1);
                self.next_steal = Instant::now() + steal_backoff(self.empty_steals);
            }
            Message::Token(token) => self.token = Some(token),
            Message::Terminate => self.begin_shutdown(),
            Message::Done => self.on_done(from),
            Message::Exit => return Next::Exit,
            Message::Progress { passive, progress } => {
                assert_eq!(
                    self.me, 0,
                    "progress from rank {from} reached rank {}",
                    self.me
                );
                self.reports.latest[from] = progress;
                self.reports.busy[from] = !passive;
            }
        }
        Next::Wait
    }

    /// A thief asks for work: half of the pool while sharing, none once shutting down.
    fn on_steal_request(&mut self, thief: usize) {
        let items = match self.phase {
            Phase::Sharing { .. } => self.pool.give_away(
                self.config.max_items_per_steal,
                self.config.max_bytes_per_steal,
            ),
            Phase::ShuttingDown { .. } => Vec::new(),
        };
        tracing::debug!(thief, items = items.len(), "steal request served");
        if items.is_empty() {
            self.send(thief, &Message::NoWork);
        } else {
            self.stats.items_given += items.len() as u64;
            self.safra.count += 1;
            self.send(thief, &Message::Work(items));
        }
    }

    /// The answer to this rank's steal request brought work.
    fn on_work(&mut self, victim: usize, items: Vec<W>) {
        tracing::debug!(victim, items = items.len(), "work stolen");
        self.stats.items_stolen += items.len() as u64;
        self.safra.count -= 1;
        self.safra.color = Color::Black;
        self.steal_outstanding = false;
        self.empty_steals = 0;
        self.pool.add(items);
    }

    /// Rank 0: another rank has its last steal request answered.
    fn on_done(&mut self, from: usize) {
        match &mut self.phase {
            Phase::ShuttingDown { dones, .. } if self.me == 0 => *dones += 1,
            phase => panic!(
                "rank {from} reported Done to rank {} in phase {phase:?}",
                self.me
            ),
        }
    }

    /// The end is known, detected here (rank 0) or announced by `Terminate`.
    fn begin_shutdown(&mut self) {
        if let Phase::Sharing { .. } = self.phase {
            self.phase = Phase::ShuttingDown {
                done_sent: false,
                dones: 0,
            };
        }
    }

    /// Every progress interval while sharing: rank 0 reports everyone's latest counts, the
    /// other ranks send theirs to it.
    fn on_report_due(&mut self, passive: bool) {
        self.status.report_slow(self.config.progress_interval);
        let progress = self.status.progress();
        if self.me == 0 {
            self.reports.latest[0] = progress;
            self.reports.busy[0] = !passive;
            self.status.report(&self.reports.latest, &self.reports.busy);
        } else {
            self.send(0, &Message::Progress { passive, progress });
        }
    }

    /// The rank has no work while sharing: it asks a victim, and the token moves on.
    fn on_idle(&mut self) -> Next {
        if !self.steal_outstanding && Instant::now() >= self.next_steal {
            let victim = self.victims.pick(self.me, self.size);
            self.send(victim, &Message::StealRequest);
            self.stats.steal_requests_sent += 1;
            self.steal_outstanding = true;
        }
        if self.me == 0 {
            self.on_idle_with_probe()
        } else {
            self.pass_token();
            Next::Wait
        }
    }

    /// Rank 0, idle: a returned token either proves the end or starts the next probe.
    fn on_idle_with_probe(&mut self) -> Next {
        let Phase::Sharing { mut probing } = self.phase else {
            unreachable!("rank 0 probes only while sharing");
        };
        if let Some(back) = self.token.take() {
            probing = false;
            if back.color == Color::White
                && self.safra.color == Color::White
                && back.sum + self.safra.count == 0
            {
                tracing::debug!(probes = self.stats.probes, "termination detected");
                self.begin_shutdown();
                for dest in 1..self.size {
                    self.send(dest, &Message::Terminate);
                }
                return Next::PollNow;
            }
        }
        if !probing {
            probing = true;
            self.stats.probes += 1;
            self.safra.color = Color::White;
            let token = Token {
                color: Color::White,
                sum: 0,
            };
            self.send(self.size - 1, &Message::Token(token));
        }
        self.phase = Phase::Sharing { probing };
        Next::Wait
    }

    /// A rank other than 0, passive: the token it holds moves on with its count and color.
    fn pass_token(&mut self) {
        if let Some(mut held) = self.token.take() {
            held.sum += self.safra.count;
            if self.safra.color == Color::Black {
                held.color = Color::Black;
            }
            self.safra.color = Color::White;
            self.send(self.me - 1, &Message::Token(held));
        }
    }

    /// Shutting down: `Done` once this rank's last steal request is answered; rank 0 lets
    /// everyone exit once every rank is done.
    fn on_shutting_down(&mut self) -> Next {
        let Phase::ShuttingDown {
            mut done_sent,
            mut dones,
        } = self.phase
        else {
            unreachable!("called while shutting down");
        };
        if !self.steal_outstanding && !done_sent {
            done_sent = true;
            if self.me == 0 {
                dones += 1;
            } else {
                self.send(0, &Message::Done);
            }
        }
        self.phase = Phase::ShuttingDown { done_sent, dones };
        if self.me == 0 && dones == self.size {
            for dest in 1..self.size {
                self.send(dest, &Message::Exit);
            }
            return Next::Exit;
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Item(u32);

    impl Work for Item {
        fn encoded_len(&self) -> usize {
            4
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        fn decode(buf: &mut &[u8]) -> Option<Self> {
            let (n, rest) = buf.split_first_chunk::<4>()?;
            *buf = rest;
            Some(Self(u32::from_le_bytes(*n)))
        }
    }

    /// Keeps what a rank sends; nothing ever arrives.
    struct Outbox {
        rank: usize,
        size: usize,
        sent: Vec<(usize, Message<Item>)>,
    }

    impl Transport for Outbox {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn send(&mut self, dest: usize, msg: Vec<u8>) {
            self.sent.push((dest, Message::decode(&msg).unwrap()));
        }
        fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
            None
        }
    }

    fn outbox(rank: usize, size: usize) -> Outbox {
        Outbox {
            rank,
            size,
            sent: Vec::new(),
        }
    }

    #[test]
    fn a_steal_request_gets_half_the_pool_then_nothing_once_shutting_down() {
        let pool = Pool::new((0..6).map(Item).collect());
        let mut t = outbox(1, 3);
        let mut c = Coordinator::new(&mut t, &pool, StealConfig::default(), &Silent);
        c.on_message(2, Message::StealRequest);
        assert_eq!(c.safra.count, 1, "a work message went out");
        c.on_message(0, Message::Terminate);
        c.on_message(2, Message::StealRequest);
        assert_eq!(c.stats.items_given, 3);
        assert_eq!(
            t.sent,
            [
                (2, Message::Work(vec![Item(0), Item(1), Item(2)])),
                (2, Message::NoWork)
            ]
        );
    }

    #[test]
    fn stolen_work_turns_the_rank_black_and_the_token_carries_it() {
        let pool = Pool::new(Vec::new());
        let mut t = outbox(2, 3);
        let mut c = Coordinator::new(&mut t, &pool, StealConfig::default(), &Silent);
        c.on_idle();
        assert!(c.steal_outstanding);
        c.on_message(1, Message::Work(vec![Item(7)]));
        assert!(!c.steal_outstanding);
        pool.give_away(1, usize::MAX);
        c.on_message(
            0,
            Message::Token(Token {
                color: Color::White,
                sum: 5,
            }),
        );
        c.on_idle();
        assert_eq!(c.safra.color, Color::White, "whitened as the token left");
        let token = t.sent.iter().find_map(|(dest, m)| match m {
            Message::Token(token) => Some((*dest, *token)),
            _ => None,
        });
        assert_eq!(
            token,
            Some((
                1,
                Token {
                    color: Color::Black,
                    sum: 4
                }
            ))
        );
    }

    #[test]
    fn rank_0_ends_the_run_on_a_white_token_with_a_zero_sum_only() {
        let pool = Pool::<Item>::new(Vec::new());
        let mut t = outbox(0, 3);
        let mut c = Coordinator::new(&mut t, &pool, StealConfig::default(), &Silent);
        assert_eq!(c.on_idle(), Next::Wait, "the first probe goes out");
        c.on_message(
            2,
            Message::Token(Token {
                color: Color::Black,
                sum: 0,
            }),
        );
        assert_eq!(c.on_idle(), Next::Wait, "a black token: probe again");
        c.on_message(
            2,
            Message::Token(Token {
                color: Color::White,
                sum: 0,
            }),
        );
        assert_eq!(c.on_idle(), Next::PollNow);
        c.on_message(1, Message::NoWork);
        c.on_message(1, Message::Done);
        assert_eq!(c.on_shutting_down(), Next::Wait, "rank 2 is not done yet");
        c.on_message(2, Message::Done);
        assert_eq!(c.on_shutting_down(), Next::Exit);
        assert_eq!(c.stats.probes, 2);
        let to_others: Vec<_> = t.sent.iter().filter(|(dest, _)| *dest != 0).collect();
        let tokens = to_others
            .iter()
            .filter(|(_, m)| matches!(m, Message::Token(_)))
            .count();
        assert_eq!(tokens, 2);
        let ends: Vec<_> = t
            .sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::Terminate | Message::Exit))
            .collect();
        assert_eq!(
            ends,
            [
                &(1, Message::Terminate),
                &(2, Message::Terminate),
                &(1, Message::Exit),
                &(2, Message::Exit)
            ]
        );
    }

    #[test]
    fn idle_ranks_ask_less_often_after_empty_answers() {
        assert_eq!(steal_backoff(1), Duration::ZERO);
        assert_eq!(steal_backoff(2), Duration::from_micros(100));
        assert_eq!(steal_backoff(3), Duration::from_micros(200));
        assert_eq!(steal_backoff(8), Duration::from_millis(5));
        assert_eq!(steal_backoff(u32::MAX), Duration::from_millis(5));
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
