//! The MPI communicator (rsmpi over the system's MPI).

use super::{Comm, Error, Result};
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

/// Bytes each rank contributes per round of a gather: MPI counts are 32-bit.
const ROUND: usize = 1 << 30;

pub(crate) struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
}

// Frugal calls MPI from the main thread only (`Threading::Funneled`); the handle is an
// integer-like token that may be moved between threads.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

pub(crate) fn init() -> Result<(mpi::environment::Universe, MpiComm)> {
    let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
        .ok_or_else(|| Error::Protocol("MPI was already initialised".into()))?;
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    Ok((universe, MpiComm { world, rank, size }))
}

impl MpiComm {
    /// Bytes each rank may send in one round: every rank's share together (the receive
    /// buffer's offsets) must stay within MPI's 32-bit counts.
    fn round_bytes(&self) -> usize {
        ROUND.min(Count::MAX as usize / self.size.max(1))
    }

    /// One round of a variable-count gather: this rank's `mine` (at most
    /// [`MpiComm::round_bytes`]).
    fn round(&self, mine: &[u8], root_only: bool) -> Vec<Vec<u8>> {
        let n = mine.len() as Count;
        let mut counts = vec![0 as Count; self.size];
        self.world.all_gather_into(&n, &mut counts[..]);
        // Offsets fit: every count is at most round_bytes(), and size × that ≤ Count::MAX.
        let displs: Vec<Count> = counts
            .iter()
            .scan(0 as Count, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let split = |buf: &[u8]| -> Vec<Vec<u8>> {
            counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
                .collect()
        };
        if root_only {
            let root = self.world.process_at_rank(0);
            if self.rank == 0 {
                let mut buf = vec![0u8; total];
                let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                root.gather_varcount_into_root(mine, &mut part);
                split(&buf)
            } else {
                root.gather_varcount_into(mine);
                Vec::new()
            }
        } else {
            let mut buf = vec![0u8; total];
            let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(mine, &mut part);
            split(&buf)
        }
    }

    /// A gather in rounds of at most [`ROUND`] bytes per rank, until every rank has sent all.
    fn gather_all(&self, mine: &[u8], root_only: bool) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); self.size];
        let mut pos = 0usize;
        loop {
            let left = (mine.len() - pos) as u64;
            let mut lefts = vec![0u64; self.size];
            self.world.all_gather_into(&left, &mut lefts[..]);
            if lefts.iter().all(|&l| l == 0) {
                return out;
            }
            let take = (left as usize).min(self.round_bytes());
            let got = self.round(&mine[pos..pos + take], root_only);
            pos += take;
            for (o, g) in out.iter_mut().zip(got) {
                o.extend_from_slice(&g);
            }
        }
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn allgather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.gather_all(mine, false))
    }
    fn gather(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let all = self.gather_all(mine, true);
        Ok((self.rank == 0).then_some(all))
    }
    fn exchange(&self, partner: usize, mine: &[u8]) -> Result<Vec<u8>> {
        if partner >= self.size {
            return Err(Error::Protocol(format!(
                "no rank {partner} of {}",
                self.size
            )));
        }
        let p = self.world.process_at_rank(partner as mpi::Rank);
        let mut theirs_len = 0u64;
        mpi::point_to_point::send_receive_into(&(mine.len() as u64), &p, &mut theirs_len, &p);
        let theirs_len = usize::try_from(theirs_len)
            .map_err(|_| Error::Protocol(format!("rank {partner} announced {theirs_len} bytes")))?;
        let mut out = vec![0u8; theirs_len];
        // In rounds of at most ROUND bytes each way: MPI counts are 32-bit.
        let (mut sent, mut got) = (0usize, 0usize);
        while sent < mine.len() || got < theirs_len {
            let s = (mine.len() - sent).min(ROUND);
            let g = (theirs_len - got).min(ROUND);
            mpi::point_to_point::send_receive_into(
                &mine[sent..sent + s],
                &p,
                &mut out[got..got + g],
                &p,
            );
            sent += s;
            got += g;
        }
        Ok(out)
    }
    fn barrier(&self) {
        self.world.barrier();
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
