//! NCCL's all-reduce on the GPUs of this machine (feature `nccl`; needs a CUDA GPU). With
//! one process the job has one rank, so the sum of a tensor is the tensor itself: what
//! this checks is that the communicator forms from MPI's id and the sum runs on the GPU.
//! Without a GPU it says it was skipped.
#![cfg(feature = "nccl")]

use candle_core::{Device, Tensor};
use janus::dist::nccl::Nccl;
use janus::dist::{init, Launch};

#[test]
fn nccl_sums_a_gpu_tensor_over_the_ranks() {
    let device = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED nccl_sums_a_gpu_tensor_over_the_ranks: no CUDA GPU ({e})");
            return;
        }
    };
    let ranks = init(&Launch::from_env()).unwrap();
    let n = ranks.size() as f32;
    let nccl = Nccl::new(&*ranks, &device).unwrap();
    let v: Vec<f32> = (0..1_000_003).map(|i| (i % 97) as f32 * 0.5).collect();
    let t = Tensor::from_vec(v.clone(), (1_000_003,), &device).unwrap();
    let sum: Vec<f32> = nccl.all_reduce_sum(&t).unwrap().to_vec1().unwrap();
    assert!(sum.iter().zip(&v).all(|(s, x)| *s == x * n));
    // A CPU tensor is refused with a message, not a crash.
    let cpu = Tensor::new(&[1f32], &Device::Cpu).unwrap();
    assert!(nccl.all_reduce_sum(&cpu).is_err());
}
