//! Sums of CUDA tensors over the job's GPUs through NCCL (cudarc's bindings, as candle's
//! `nccl` feature builds them). MPI starts the ranks and carries NCCL's unique id from rank
//! 0 to the others; the sums themselves go GPU to GPU.

use std::ffi::c_char;

use candle_core::cuda::cudarc::nccl::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

use super::Collective;
use crate::error::{Error, Result};

/// This rank's NCCL communicator, on its GPU.
pub struct Nccl {
    comm: Comm,
}

impl Nccl {
    /// Every rank of `ranks` calls this with its own GPU (usually `cuda:<local rank>`).
    pub fn new(ranks: &dyn Collective, device: &Device) -> Result<Self> {
        let Device::Cuda(gpu) = device else {
            return Err(Error::InvalidInput(
                "NCCL sums tensors on CUDA devices; this rank's device is the CPU".into(),
            ));
        };
        let mut id = [0u8; 128];
        if ranks.rank() == 0 {
            let fresh = Id::new().map_err(nccl_error)?;
            for (b, c) in id.iter_mut().zip(fresh.internal()) {
                *b = *c as u8;
            }
        }
        ranks.broadcast_bytes(0, &mut id)?;
        let id = Id::uninit(id.map(|b| b as c_char));
        let comm = Comm::from_rank(gpu.cuda_stream(), ranks.rank(), ranks.size(), id)
            .map_err(nccl_error)?;
        Ok(Self { comm })
    }

    /// Element-wise sum of an f32 tensor over every rank: a new tensor on the same GPU.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.contiguous()?.apply_op1_no_bwd(&AllReduce(&self.comm))?)
    }
}

fn nccl_error(e: impl std::fmt::Debug) -> Error {
    Error::InvalidInput(format!("NCCL: {e:?}"))
}

struct AllReduce<'a>(&'a Comm);

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL sums CUDA tensors; this one is on the CPU")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("NCCL all-reduce of a non-contiguous tensor")
        };
        let src = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let device = storage.device.clone();
        let mut dst = device.alloc_zeros::<f32>(end - start)?;
        self.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Cuda(format!("NCCL all-reduce: {e:?}").into()))?;
        Ok((
            CudaStorage::wrap_cuda_slice(dst, device),
            layout.shape().clone(),
        ))
    }
}
