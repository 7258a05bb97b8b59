//! Data-parallel training across processes: which rank this process is, and the
//! collectives the trainer needs (sums of gradients and counters, a barrier).
//!
//! - [`launch`]: what the launcher (`mpirun`, `srun`) told this process through its
//!   environment, read before anything else starts;
//! - [`Single`]: one process, no communication (the plain run);
//! - `mpi`: Open MPI's collectives, for CPU tensors (cargo feature `mpi`);
//! - `nccl`: NCCL's all-reduce for CUDA tensors, its id shared over MPI (feature `nccl`).
//!
//! The collectives are existing engines' (MPI, NCCL); nothing here speaks a protocol of
//! its own.

pub mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;

use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
pub use launch::Launch;

/// Collective operations over the ranks of one job. Every rank must make the same calls
/// in the same order (MPI's rule); a call blocks until every rank has made it.
pub trait Collective {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum of every rank's `send`, written to every rank's `recv` (of the same
    /// length; two buffers because MPI's in-place form is not in the `mpi` crate).
    fn all_reduce_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// Element-wise sum of `buf` over all ranks, left in every rank's `buf`.
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Copies rank `root`'s `buf` into every other rank's.
    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<()>;
    /// Stops every rank of the job with `code` (after an error on this one, so that the
    /// others do not wait for it forever).
    fn abort(&self, code: i32) -> !;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }

    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn broadcast_bytes(&self, _: usize, _: &mut [u8]) -> Result<()> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The ranks this process belongs to.
pub type Comm = Rc<dyn Collective>;

/// Joins the job the launcher started (or runs alone when none did). Must be called once,
/// on the main thread, before any other thread is started.
pub fn init(launch: &Launch) -> Result<Comm> {
    if launch.size <= 1 && !launch.forced {
        return Ok(Rc::new(Single));
    }
    #[cfg(feature = "mpi")]
    {
        let world = mpi::MpiWorld::init()?;
        if world.size() != launch.size && !launch.forced {
            return Err(Error::InvalidInput(format!(
                "the launcher ({}) set {} ranks but MPI reports {}: was janus built against \
                 another MPI than the one that launched it?",
                launch.launcher,
                launch.size,
                world.size()
            )));
        }
        Ok(Rc::new(world))
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::InvalidInput(format!(
        "{} started {} ranks, but this janus was built without MPI: rebuild with \
         `cargo build --release --features janus-cli/mpi` (needs Open MPI's libopenmpi-dev), \
         or run one process",
        launch.launcher, launch.size
    )))
}

/// Default bucket of a gradient all-reduce: 4 Mi f32 values (16 MiB), large enough that
/// per-call latency is small beside the transfer, small enough to bound the copy.
pub const BUCKET_ELEMS: usize = 1 << 22;

/// Sums f32 tensors element-wise over all ranks, in buckets of about `bucket` values;
/// each tensor keeps its shape and device. With one rank the tensors are left untouched.
pub fn all_reduce_tensors(
    comm: &dyn Collective,
    tensors: &mut [Tensor],
    bucket: usize,
) -> Result<()> {
    if comm.size() == 1 || tensors.is_empty() {
        return Ok(());
    }
    // Each bucket is copied once out of the tensors and once back into new ones.
    let (mut send, mut recv) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < tensors.len() {
        // Consecutive tensors fill one bucket; a tensor larger than a bucket goes alone.
        let mut end = start;
        let mut elems = 0;
        while end < tensors.len() && (end == start || elems + tensors[end].elem_count() <= bucket) {
            elems += tensors[end].elem_count();
            end += 1;
        }
        send.clear();
        send.reserve(elems);
        for t in &tensors[start..end] {
            if t.dtype() != DType::F32 {
                return Err(Error::InvalidInput(format!(
                    "all-reduce of a {:?} tensor: gradients are summed in f32",
                    t.dtype()
                )));
            }
            match crate::model::ops::cpu_slice::<f32>(t) {
                Some(s) => send.extend_from_slice(&s),
                None => send.extend(t.flatten_all()?.to_vec1::<f32>()?),
            }
        }
        if recv.len() < send.len() {
            recv.resize(send.len(), 0.0);
        }
        let out = &mut recv[..send.len()];
        comm.all_reduce_f32(&send, out)?;
        let mut at = 0;
        for t in &mut tensors[start..end] {
            let n = t.elem_count();
            let device: Device = t.device().clone();
            *t = Tensor::from_slice(&out[at..at + n], t.shape(), &device)?;
            at += n;
        }
        start = end;
    }
    Ok(())
}

/// True on every rank when `flag` is true on any.
pub fn any(comm: &dyn Collective, flag: bool) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(flag);
    }
    let mut v = [f64::from(u8::from(flag))];
    comm.all_reduce_f64(&mut v)?;
    Ok(v[0] > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Two ranks in one process: rank 0's calls are answered with rank 1's recorded
    /// values, so the bucketing and the reassembly can be checked without MPI.
    struct Mirror {
        other: RefCell<Vec<Vec<f32>>>,
        sizes: RefCell<Vec<usize>>,
    }

    impl Collective for Mirror {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn all_reduce_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
            let other = self.other.borrow_mut().remove(0);
            assert_eq!((other.len(), recv.len()), (send.len(), send.len()));
            self.sizes.borrow_mut().push(send.len());
            for ((r, a), b) in recv.iter_mut().zip(send).zip(other) {
                *r = a + b;
            }
            Ok(())
        }
        fn all_reduce_f64(&self, _: &mut [f64]) -> Result<()> {
            unreachable!()
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn broadcast_bytes(&self, _: usize, _: &mut [u8]) -> Result<()> {
            unreachable!()
        }
        fn abort(&self, _: i32) -> ! {
            unreachable!()
        }
    }

    #[test]
    fn buckets_group_small_tensors_and_keep_shapes() {
        let dev = Device::Cpu;
        let shapes: [&[usize]; 4] = [&[2, 3], &[4], &[10], &[1, 2]];
        let mut ts: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n: usize = s.iter().product();
                let v: Vec<f32> = (0..n).map(|j| (i * 100 + j) as f32).collect();
                Tensor::from_vec(v, *s, &dev).unwrap()
            })
            .collect();
        // Buckets of at most 11 values: [6 + 4], [10], [2].
        let other: Vec<Vec<f32>> = [10usize, 10, 2]
            .iter()
            .map(|&n| (0..n).map(|j| 1000.0 + j as f32).collect())
            .collect();
        let m = Mirror {
            other: RefCell::new(other),
            sizes: RefCell::new(Vec::new()),
        };
        all_reduce_tensors(&m, &mut ts, 11).unwrap();
        assert_eq!(*m.sizes.borrow(), vec![10, 10, 2]);
        assert_eq!(ts[0].dims(), &[2, 3]);
        assert_eq!(ts[3].dims(), &[1, 2]);
        let t1: Vec<f32> = ts[1].to_vec1().unwrap();
        // Tensor 1 is values 100..104 at offsets 6..10 of the first bucket.
        assert_eq!(t1, vec![1106.0, 1108.0, 1110.0, 1112.0]);
        let t3: Vec<f32> = ts[3].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(t3, vec![1300.0, 1302.0]);
    }

    #[test]
    fn one_rank_leaves_tensors_untouched() {
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let mut ts = vec![t.clone()];
        all_reduce_tensors(&Single, &mut ts, 1).unwrap();
        assert_eq!(ts[0].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        assert!(any(&Single, true).unwrap() && !any(&Single, false).unwrap());
    }

    #[test]
    fn other_dtypes_are_refused() {
        let m = Mirror {
            other: RefCell::new(vec![]),
            sizes: RefCell::new(vec![]),
        };
        let mut ts = vec![Tensor::new(&[1f64], &Device::Cpu).unwrap()];
        let e = all_reduce_tensors(&m, &mut ts, 8).unwrap_err().to_string();
        assert!(e.contains("f32"), "{e}");
    }
}
