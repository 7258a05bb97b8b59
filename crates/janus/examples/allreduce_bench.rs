//! Times the gradient all-reduce of data-parallel training across the ranks `mpirun`
//! starts: f32 tensors of several sizes through `dist::all_reduce_tensors` (16 MiB
//! buckets), as `janus train` sums its gradients. Rank 0 prints, per size, the seconds and
//! the bus bandwidth 2(N-1)/N x bytes / seconds (what a ring all-reduce moves per rank).
//!
//!   mpirun -np 2 target/release/examples/allreduce_bench [MiB ...]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use janus::dist::{self, Launch};

fn main() -> anyhow::Result<()> {
    let comm = dist::init(&Launch::from_env())?;
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![16, 256, 1024]
    } else {
        sizes
    };
    let n = comm.size() as f64;
    for mib in sizes {
        // A gradient list as a model has one: tensors of 4 MiB.
        let per = 1 << 20;
        let mut grads: Vec<Tensor> = (0..mib / 4)
            .map(|_| Tensor::ones(per, DType::F32, &Device::Cpu))
            .collect::<Result<_, _>>()?;
        dist::all_reduce_tensors(&*comm, &mut grads, dist::BUCKET_ELEMS)?;
        let reps = 5;
        comm.barrier()?;
        let start = Instant::now();
        for _ in 0..reps {
            dist::all_reduce_tensors(&*comm, &mut grads, dist::BUCKET_ELEMS)?;
        }
        let s = start.elapsed().as_secs_f64() / reps as f64;
        let bytes = (mib << 20) as f64;
        if comm.rank() == 0 {
            println!(
                "{mib} MiB over {} ranks: {:.4} s, bus bandwidth {:.2} GB/s",
                comm.size(),
                s,
                2.0 * (n - 1.0) / n * bytes / s / 1e9
            );
        }
    }
    Ok(())
}
