//! The VQ model's 2-D convolution: candle's `conv2d` as the plain path, the im2col kernel
//! ([`crate::kernels::conv`]) for bf16 on the CPU (candle has no CPU bf16 convolution).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use half::bf16;

use std::sync::Arc;

use super::ops::{cpu_slice, kernel_inputs};
use crate::kernels;
use crate::kernels::conv::{conv2d_bf16, ConvDims, ConvWeight};
use crate::kernels::packed::PackedBf16;

/// A square-kernel convolution with bias, `weight` `(cout, cin, k, k)` in the checkpoint.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Weight,
    bias: Tensor,
    k: usize,
    stride: usize,
    pad: usize,
}

#[derive(Debug, Clone)]
enum Weight {
    /// As loaded, `(cout, cin, k, k)`: trainable weights and devices without the kernel.
    Original(Tensor),
    /// Reordered once to `(cout, k, k, cin)` for the kernel (CPU bf16 inference); the
    /// plain path permutes it back.
    ChannelsLast(Tensor),
    /// Reordered the same way and packed for the CPU kernel.
    Packed(Arc<PackedBf16>),
}

impl Conv2d {
    /// Loads `weight` and `bias` of a `cin -> cout`, `k x k` convolution.
    pub fn load(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let w = vb.get((cout, cin, k, k), "weight")?;
        let bias = vb.get(cout, "bias")?;
        let weight = if kernel_inputs(&[&w]) {
            let cl = w.permute((0, 2, 3, 1))?.contiguous()?;
            let packed = PackedBf16::packs_at(kernels::isa())
                .then(|| cpu_slice::<bf16>(&cl).map(|s| PackedBf16::pack(&s, cout, k * k * cin)))
                .flatten();
            match packed {
                Some(p) => Weight::Packed(Arc::new(p)),
                None => Weight::ChannelsLast(cl),
            }
        } else {
            Weight::Original(w)
        };
        Ok(Self {
            weight,
            bias,
            k,
            stride,
            pad,
        })
    }

    /// `(cout, cin)` of the weight.
    fn channels(&self) -> Result<(usize, usize)> {
        Ok(match &self.weight {
            Weight::Original(w) => (w.dim(0)?, w.dim(1)?),
            Weight::ChannelsLast(w) => (w.dim(0)?, w.dim(3)?),
            Weight::Packed(p) => (p.rows(), p.cols() / (self.k * self.k)),
        })
    }

    /// The weight as `(cout, cin, k, k)` for candle.
    fn original(&self) -> Result<Tensor> {
        let (cout, cin) = self.channels()?;
        match &self.weight {
            Weight::Original(w) => Ok(w.clone()),
            Weight::ChannelsLast(w) => w.permute((0, 3, 1, 2))?.contiguous(),
            Weight::Packed(p) => {
                Tensor::from_vec(p.unpack(), (cout, self.k, self.k, cin), self.bias.device())?
                    .permute((0, 3, 1, 2))?
                    .contiguous()
            }
        }
    }

    fn forward_kernel(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if matches!(self.weight, Weight::Original(_)) {
            return Ok(None);
        }
        if !kernel_inputs(&[x]) {
            return Ok(None);
        }
        let (b, cin, h, wd) = x.dims4()?;
        let (cout, wcin) = self.channels()?;
        if wcin != cin {
            candle_core::bail!("convolution takes {wcin} channels, got {:?}", x.dims());
        }
        let d = ConvDims {
            b,
            cin,
            h,
            w: wd,
            cout,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        if h + 2 * self.pad < self.k || wd + 2 * self.pad < self.k {
            candle_core::bail!(
                "{}x{} input is smaller than the {}x{} kernel",
                h,
                wd,
                self.k,
                self.k
            );
        }
        let (ho, wo) = d.out_hw();
        let x = x.contiguous()?;
        let bias = self.bias.to_dtype(DType::F32)?.contiguous()?;
        let mut out = vec![bf16::ZERO; b * cout * ho * wo];
        let (Some(xs), Some(bs)) = (cpu_slice::<bf16>(&x), cpu_slice::<f32>(&bias)) else {
            return Ok(None);
        };
        let rows = match &self.weight {
            Weight::ChannelsLast(w) => cpu_slice::<bf16>(w),
            _ => None,
        };
        let w = match (&self.weight, &rows) {
            (Weight::Packed(p), _) => ConvWeight::Packed(p),
            (Weight::ChannelsLast(_), Some(ws)) => ConvWeight::Rows(ws),
            _ => return Ok(None),
        };
        conv2d_bf16(&xs, w, Some(&bs), d, &mut out, kernels::isa());
        Ok(Some(Tensor::from_vec(out, (b, cout, ho, wo), x.device())?))
    }
}

impl Module for Conv2d {
    /// # Shapes
    /// `(B, cin, H, W) -> (B, cout, Ho, Wo)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = self.forward_kernel(x)? {
            return Ok(y);
        }
        let y = x.conv2d(&self.original()?, self.pad, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}
