//! The [`Transport`] of a real job: MPI point-to-point messages on one tag.
//!
//! Only the coordinator thread calls MPI (`MPI_THREAD_FUNNELED`). Sends are standard blocking
//! sends; they cannot deadlock because the only large message (a work reply) goes to a rank
//! that is idle and polling, and every message an idle rank sends is small enough to be eager.

use mpi::Tag;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source, Status};
use mpi::topology::{Communicator, SimpleCommunicator};

use crate::protocol::Transport;

const STEAL_TAG: Tag = 7001;

pub struct MpiTransport<'w> {
    world: &'w SimpleCommunicator,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for MpiTransport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiTransport")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl<'w> MpiTransport<'w> {
    pub fn new(world: &'w SimpleCommunicator) -> Self {
        Self {
            world,
            rank: world.rank() as usize,
            size: world.size() as usize,
        }
    }
}

impl Transport for MpiTransport<'_> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn send(&mut self, dest: usize, msg: Vec<u8>) {
        self.world
            .process_at_rank(dest as i32)
            .send_with_tag(&msg[..], STEAL_TAG);
    }

    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)> {
        let probed: (_, Status) = self
            .world
            .any_process()
            .immediate_matched_probe_with_tag(STEAL_TAG)?;
        let (msg, status) = probed.matched_receive_vec::<u8>();
        Some((status.source_rank() as usize, msg))
    }
}
