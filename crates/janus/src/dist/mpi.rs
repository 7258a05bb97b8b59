//! The job's ranks through MPI (the `mpi` crate over the system's Open MPI).
//!
//! MPI's default error handler stops the whole job on a failed call, and `mpirun` stops
//! every rank when one exits abnormally, so a lost rank never leaves the others waiting.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Threading;

use super::Collective;
use crate::error::{Error, Result};

/// MPI_COMM_WORLD; MPI is finalised when this is dropped.
pub(super) struct MpiWorld {
    world: SimpleCommunicator,
    // Dropped last: MPI_Finalize.
    _universe: Universe,
}

impl MpiWorld {
    /// MPI_Init_thread. Only the main thread talks to MPI (the kernels' threads never do),
    /// so "funneled" is all that is asked.
    pub(super) fn init() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::InvalidInput("MPI was initialised twice".into()))?;
        Ok(Self {
            world: universe.world(),
            _universe: universe,
        })
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        // MPI counts are i32: split anything longer (a bucket never is).
        let n = i32::MAX as usize;
        for (s, r) in send.chunks(n).zip(recv.chunks_mut(n)) {
            self.world.all_reduce_into(s, r, SystemOperation::sum());
        }
        Ok(())
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        for chunk in buf.chunks_mut(i32::MAX as usize) {
            let send = chunk.to_vec();
            self.world
                .all_reduce_into(&send[..], chunk, SystemOperation::sum());
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
