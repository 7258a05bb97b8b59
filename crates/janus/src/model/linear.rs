//! The linear layer every part of the network uses: candle's product as the plain path,
//! the CPU kernels ([`crate::kernels`]) as the fast one, and optional quantised weights.
//!
//! The fast path runs only where it computes the same thing within bf16 rounding: a CPU
//! tensor that tracks no gradient (training keeps candle's differentiable product), with
//! bf16 weights and bf16 activations, or quantised weights. Everything else (f32, GPU,
//! autograd) goes through candle.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use half::bf16;

use super::ops::{cpu_slice, kernel_inputs};
use super::ops::{storage_to_tensor, tensor_to_storage};
use crate::kernels;
use crate::kernels::gemm::matmul_bf16;
use crate::kernels::packed::PackedBf16;
use crate::kernels::quant::{QuantFormat, QuantMatrix};

/// How a [`Linear`] computes its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductPath {
    /// Whatever applies: the kernels where they can run, candle otherwise.
    Auto,
    /// candle's product (dequantised weights when quantised).
    Candle,
}

/// The weight of a [`Linear`].
#[derive(Debug, Clone)]
enum Weight {
    /// `(out, in)` as loaded.
    Dense(Tensor),
    /// Packed for the CPU kernel (bf16 inference); the dense tensor is gone.
    Packed(Arc<PackedBf16>),
    /// Quantised on the CPU; the dense tensor is gone.
    Quant(Arc<QuantMatrix>),
}

/// `y = x · Wᵀ + b` with `W` `(out_features, in_features)`, plus a LoRA update when an
/// adapter is attached.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

/// A LoRA adapter: adds `scale·(x·Aᵀ)·Bᵀ` with `A` `(r, in)` and `B` `(out, r)`.
///
/// Training attaches adapters (they are its variables); inference folds them into the
/// weights at load instead ([`crate::weights::lora::MergedLoraProvider`]).
#[derive(Debug, Clone)]
pub struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl Adapter {
    /// The adapter `vb` serves for this layer (`lora_A.weight`, `lora_B.weight` and the
    /// scalar `lora_scaling` under its prefix), if any.
    pub fn load(vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Option<Self>> {
        if !vb.contains_tensor("lora_A.weight") {
            return Ok(None);
        }
        let a = vb.get_unchecked("lora_A.weight")?;
        let b = vb.get_unchecked("lora_B.weight")?;
        let r = a.dim(0)?;
        if a.dims() != [r, in_dim] || b.dims() != [out_dim, r] {
            candle_core::bail!(
                "LoRA adapter of {}: A {:?} and B {:?} do not fit a {in_dim} -> {out_dim} layer",
                vb.prefix(),
                a.dims(),
                b.dims()
            );
        }
        let scale = vb
            .get_unchecked_dtype(crate::weights::lora::SCALING, DType::F32)?
            .to_scalar::<f32>()?;
        Ok(Some(Self {
            a,
            b,
            scale: f64::from(scale),
        }))
    }

    /// `scale·(x·Aᵀ)·Bᵀ`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = product(&x.to_dtype(self.a.dtype())?, &self.a)?;
        product(&h, &self.b)? * self.scale
    }
}

/// `x · Wᵀ` for `x` `(..., in)`. Training takes one 2-D product over every row (no
/// gradient for a weight broadcast over the batch); inference keeps candle_nn::Linear's
/// batched form, whose results its parity tests pin.
fn product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    match x.rank() {
        3 if !x.track_op() => {
            let b = x.dim(0)?;
            x.matmul(&w.broadcast_left(b)?.t()?)
        }
        2 | 3 => rows_matmul(x, &w.t()?),
        _ => x.broadcast_matmul(&w.t()?),
    }
}

/// `x · m` for `x` `(..., k)` and `m` `(k, n)`: `(..., n)`.
pub(crate) fn rows_matmul(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let k = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / k.max(1);
    let y = x.reshape((rows, k))?.matmul(m)?;
    let mut shape = dims.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = m.dim(1)?;
    }
    y.reshape(shape)
}

impl Linear {
    /// A weight `(out, in)` and an optional bias `(out,)` as they are, or with `quant` the
    /// weight quantised straight from its row-major form (never packed first: a packed
    /// bf16 copy of every layer, written and then dropped, took a third of a quantised
    /// load's time; CPU only). Unquantised on a CPU with a packed kernel (AVX-512 BF16, AVX2),
    /// a bf16 weight that tracks no gradient is packed for it (one pass over the weight, once).
    pub fn new(weight: Tensor, bias: Option<Tensor>, quant: Option<QuantFormat>) -> Result<Self> {
        let Some(format) = quant else {
            return Ok(Self::dense(weight, bias));
        };
        let mut linear = Self {
            weight: Weight::Dense(weight),
            bias,
            adapter: None,
        };
        linear.quantize(format)?;
        Ok(linear)
    }

    /// [`Self::new`] without quantisation.
    fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        if Self::packs(&weight) {
            if let Ok((n, k)) = weight.dims2() {
                if let Ok(w) = weight.contiguous() {
                    if let Some(s) = cpu_slice::<bf16>(&w) {
                        let p = PackedBf16::pack(&s, n, k);
                        return Self {
                            weight: Weight::Packed(Arc::new(p)),
                            bias,
                            adapter: None,
                        };
                    }
                }
            }
        }
        Self {
            weight: Weight::Dense(weight),
            bias,
            adapter: None,
        }
    }

    /// Attaches a LoRA adapter.
    pub fn with_adapter(mut self, adapter: Option<Adapter>) -> Self {
        self.adapter = adapter;
        self
    }

    /// Whether [`Self::new`] packs this weight for the CPU kernel.
    pub fn packs(weight: &Tensor) -> bool {
        kernel_inputs(&[weight]) && weight.rank() == 2 && PackedBf16::packs_at(kernels::isa())
    }

    /// Loads `weight` (and `bias` when `bias`) of a `in_dim -> out_dim` layer, and its
    /// LoRA adapter when `vb` serves one; quantised as [`Self::new`] says.
    pub fn load(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        quant: Option<QuantFormat>,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        let adapter = Adapter::load(&vb, in_dim, out_dim)?;
        Ok(Self::new(weight, bias, quant)?.with_adapter(adapter))
    }

    /// `(out_features, in_features)`.
    pub fn shape(&self) -> (usize, usize) {
        match &self.weight {
            Weight::Dense(w) => (w.dims()[0], w.dims()[1]),
            Weight::Packed(p) => (p.rows(), p.cols()),
            Weight::Quant(q) => (q.rows(), q.cols()),
        }
    }

    /// The quantisation format, if quantised.
    pub fn quant_format(&self) -> Option<QuantFormat> {
        match &self.weight {
            Weight::Quant(q) => Some(q.format()),
            _ => None,
        }
    }

    /// Bytes the weight holds in memory.
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            Weight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::Packed(p) => p.size_bytes(),
            Weight::Quant(q) => q.size_bytes(),
        }
    }

    /// Replaces a dense CPU weight by its quantised form (no-op when already quantised).
    pub fn quantize(&mut self, format: QuantFormat) -> Result<()> {
        if let Weight::Packed(p) = &self.weight {
            let q = QuantMatrix::quantize_packed(p, format);
            self.weight = Weight::Quant(Arc::new(q));
            return Ok(());
        }
        let Weight::Dense(w) = &self.weight else {
            return Ok(());
        };
        if !w.device().is_cpu() {
            candle_core::bail!("quantised weights run on the CPU only");
        }
        let (rows, cols) = w.dims2()?;
        let w = w.contiguous()?;
        let q = match w.dtype() {
            DType::BF16 => {
                cpu_slice::<bf16>(&w).map(|s| QuantMatrix::quantize_bf16(&s, rows, cols, format))
            }
            _ => {
                let w = w.to_dtype(DType::F32)?;
                cpu_slice::<f32>(&w).map(|s| QuantMatrix::quantize_f32(&s, rows, cols, format))
            }
        };
        let Some(q) = q else {
            candle_core::bail!("weight is not readable CPU memory");
        };
        self.weight = Weight::Quant(Arc::new(q));
        Ok(())
    }

    /// [`Module::forward`] along a chosen path (tests compare the two).
    ///
    /// # Shapes
    /// `(..., in) -> (..., out)`
    pub fn forward_with(&self, x: &Tensor, path: ProductPath) -> Result<Tensor> {
        let y = self.forward_base(x, path)?;
        match &self.adapter {
            Some(a) => {
                let dtype = y.dtype();
                y + a.forward(x)?.to_dtype(dtype)?
            }
            None => Ok(y),
        }
    }

    /// The product with the (frozen or trained) weight, without the adapter.
    fn forward_base(&self, x: &Tensor, path: ProductPath) -> Result<Tensor> {
        let float = matches!(x.dtype(), DType::F32 | DType::BF16);
        if path == ProductPath::Auto
            && x.track_op()
            && float
            && x.device().is_cpu()
            && self.frozen()
        {
            let plain = Self {
                weight: self.weight.clone(),
                bias: self.bias.clone(),
                adapter: None,
            };
            return x.contiguous()?.apply_op1(FrozenProduct(plain));
        }
        if path == ProductPath::Auto {
            if let Some(y) = self.forward_kernels(x)? {
                return Ok(y);
            }
        }
        let w = match &self.weight {
            Weight::Dense(w) => w.clone(),
            Weight::Packed(p) => Tensor::from_vec(p.unpack(), (p.rows(), p.cols()), x.device())?,
            Weight::Quant(q) => {
                let (rows, cols) = (q.rows(), q.cols());
                Tensor::from_vec(q.dequantize(), (rows, cols), x.device())?.to_dtype(x.dtype())?
            }
        };
        let y = product(x, &w)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Whether neither the weight nor the bias trains.
    fn frozen(&self) -> bool {
        let weight = match &self.weight {
            Weight::Dense(w) => w.track_op(),
            Weight::Packed(_) | Weight::Quant(_) => false,
        };
        !weight && !self.bias.as_ref().is_some_and(|b| b.track_op())
    }

    /// The weight as a dense f32 `(out, in)` tensor (a temporary copy unless it is one).
    fn dense_f32(&self, device: &candle_core::Device) -> Result<Tensor> {
        match &self.weight {
            Weight::Dense(w) => w.to_dtype(DType::F32),
            Weight::Packed(p) => {
                Tensor::from_vec(p.unpack(), (p.rows(), p.cols()), device)?.to_dtype(DType::F32)
            }
            Weight::Quant(q) => Tensor::from_vec(q.dequantize(), (q.rows(), q.cols()), device),
        }
    }

    /// The kernels' product, or `None` where they do not apply.
    fn forward_kernels(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.track_op() || self.bias.as_ref().is_some_and(|b| b.track_op())
        {
            return Ok(None);
        }
        let (n, k) = self.shape();
        let dims = x.dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear layer takes {k} input features, got shape {dims:?}");
        }
        let m = x.elem_count() / k.max(1);
        let isa = kernels::isa();
        let x = x.contiguous()?;
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        if x.dtype() == DType::BF16 {
            // AMX tiles, bias and rounding fused into their stores. Tiles round
            // differently from one row alone: they decline under row invariance, where
            // rows must get the bits they get alone.
            let b = bias.as_deref();
            let tiled = cpu_slice::<bf16>(&x).and_then(|xs| match &self.weight {
                Weight::Packed(p) => p.matmul_to_bf16_tiles(&xs, m, b, isa),
                Weight::Quant(q) => q.matmul_bf16_to_bf16_tiles(&xs, m, b, isa),
                Weight::Dense(_) => None,
            });
            if let Some(y) = tiled {
                return Ok(Some(Tensor::from_vec(y, shape, x.device())?));
            }
        }
        let out = match (&self.weight, x.dtype()) {
            (Weight::Dense(w), DType::BF16) if kernel_inputs(&[w]) => {
                let w = w.contiguous()?;
                let views = (cpu_slice::<bf16>(&x), cpu_slice::<bf16>(&w));
                let (Some(xs), Some(ws)) = views else {
                    return Ok(None);
                };
                let mut out = vec![0f32; m * n];
                matmul_bf16(&xs, &ws, m, n, k, &mut out, isa);
                Some(out)
            }
            (Weight::Packed(p), DType::BF16) => {
                cpu_slice::<bf16>(&x).map(|xs| p.matmul_to_vec(&xs, m, isa))
            }
            (Weight::Quant(q), DType::BF16) => {
                cpu_slice::<bf16>(&x).map(|xs| q.matmul_bf16_to_vec(&xs, m, isa))
            }
            (Weight::Quant(q), DType::F32) => {
                cpu_slice::<f32>(&x).map(|xs| q.matmul_to_vec(&xs, m, isa))
            }
            _ => None,
        };
        let Some(mut out) = out else {
            return Ok(None);
        };
        let y = match x.dtype() {
            DType::BF16 => {
                // The bias added on the way to bf16, in parallel (f32 sum, then rounded).
                let mut y = vec![bf16::ZERO; out.len()];
                kernels::fused::round_bf16_bias(&out, bias.as_deref(), &mut y, isa);
                Tensor::from_vec(y, shape, x.device())?
            }
            _ => {
                if let Some(b) = &bias {
                    for row in out.chunks_exact_mut(n) {
                        row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                    }
                }
                Tensor::from_vec(out, shape, x.device())?
            }
        };
        Ok(Some(y))
    }
}

/// `x·Wᵀ + b` with a frozen weight as one autograd op: the forward through the same
/// kernels as inference (packed, quantised or candle's product), the backward `dx = dy·W`
/// only. candle's own product would also compute the weight's gradient, a weight-sized
/// tensor per layer kept to the end of the backward pass, that nothing uses.
struct FrozenProduct(Linear);

impl candle_core::CustomOp1 for FrozenProduct {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        s: &candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = storage_to_tensor(s, l)?;
        tensor_to_storage(&self.0.forward_base(&x, ProductPath::Auto)?)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        super::ops::count(0);
        // In f32 whatever the dtype: candle's bf16 products are slow on the CPU.
        let w = self.0.dense_f32(arg.device())?; // (out, in)
        let g = grad.to_dtype(DType::F32)?;
        let dx = rows_matmul(&g, &w)?;
        Ok(Some(dx.to_dtype(arg.dtype())?))
    }
}

impl Module for Linear {
    /// # Shapes
    /// `(..., in) -> (..., out)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, ProductPath::Auto)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Var;

    use super::*;

    use crate::testing::max_rel;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::testing::hashed(shape, seed, 1.0)
    }

    #[test]
    fn quantised_as_loaded_equals_quantised_after_packing() {
        let w = rand(&[40, 600], 1).to_dtype(DType::BF16).unwrap();
        let b = Some(rand(&[40], 2).to_dtype(DType::BF16).unwrap());
        let x = rand(&[3, 600], 3).to_dtype(DType::BF16).unwrap();
        let bits = |l: &Linear| {
            let y = l.forward(&x).unwrap().to_dtype(DType::F32).unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            y.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        for f in [QuantFormat::Q8, QuantFormat::Q4] {
            let mut after = Linear::new(w.clone(), b.clone(), None).unwrap();
            after.quantize(f).unwrap();
            let loaded = Linear::new(w.clone(), b.clone(), Some(f)).unwrap();
            assert_eq!(loaded.quant_format(), Some(f));
            assert_eq!(loaded.weight_bytes(), after.weight_bytes());
            assert_eq!(bits(&loaded), bits(&after), "{f:?}");
        }
        let plain = Linear::new(w.clone(), b.clone(), None).unwrap();
        assert_eq!(plain.quant_format(), None);
        assert_eq!(bits(&plain), bits(&Linear::new(w, b, None).unwrap()));
    }

    #[test]
    fn bf16_kernels_match_candle_within_bf16_rounding() {
        for &(lead, k, n, bias) in &[
            (&[1usize, 1][..], 33usize, 7usize, true),
            (&[2, 3], 64, 13, false),
            (&[1, 67], 130, 29, true),
            (&[5], 17, 3, true),
        ] {
            let w = rand(&[n, k], 1).to_dtype(DType::BF16).unwrap();
            let b = bias.then(|| rand(&[n], 2).to_dtype(DType::BF16).unwrap());
            let lin = Linear::new(w, b, None).unwrap();
            let mut shape = lead.to_vec();
            shape.push(k);
            let x = rand(&shape, 3).to_dtype(DType::BF16).unwrap();
            let fast = lin.forward_with(&x, ProductPath::Auto).unwrap();
            let plain = lin.forward_with(&x, ProductPath::Candle).unwrap();
            assert_eq!(fast.dims(), plain.dims());
            assert_eq!(fast.dtype(), DType::BF16);
            let e = max_rel(&fast, &plain);
            assert!(e < 1e-2, "shape {shape:?} -> {n}: relative error {e}");
        }
    }

    #[test]
    fn tracked_inputs_keep_the_differentiable_path() {
        let w = rand(&[5, 8], 1).to_dtype(DType::BF16).unwrap();
        let lin = Linear::new(w, None, None).unwrap();
        let x = Var::from_tensor(&rand(&[2, 8], 2).to_dtype(DType::BF16).unwrap()).unwrap();
        assert!(lin.forward_kernels(x.as_tensor()).unwrap().is_none());
        let y = lin.forward(x.as_tensor()).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
    }

    /// Values and input gradients of the frozen-weight op against candle's product (on
    /// the dequantised weight when quantised), and no gradient for the weight.
    #[test]
    fn frozen_product_matches_candle_values_and_input_gradients() {
        type Case<'a> = (&'a [usize], usize, usize, DType, Option<QuantFormat>);
        let cases: &[Case] = &[
            (&[3, 33], 33, 7, DType::F32, None),
            (&[2, 3, 67], 67, 29, DType::F32, None),
            (&[1, 4, 130], 130, 13, DType::BF16, None),
            (&[5, 64], 64, 3, DType::F32, Some(QuantFormat::Q8)),
            (&[2, 9, 96], 96, 17, DType::BF16, Some(QuantFormat::Q4)),
        ];
        for &(shape, k, n, dtype, quant) in cases {
            let w = rand(&[n, k], 1).to_dtype(dtype).unwrap();
            let b = Some(rand(&[n], 2).to_dtype(dtype).unwrap());
            let lin = Linear::new(w.clone(), b, quant).unwrap();
            let x = Var::from_tensor(&rand(shape, 3).to_dtype(dtype).unwrap()).unwrap();
            let dy = rand(&[shape[..shape.len() - 1].to_vec(), vec![n]].concat(), 4)
                .to_dtype(dtype)
                .unwrap();
            let run = |path| {
                let y = lin.forward_with(x.as_tensor(), path).unwrap();
                let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
                (y, g)
            };
            let (fast, gf) = run(ProductPath::Auto);
            let (plain, gp) = run(ProductPath::Candle);
            let tol = if dtype == DType::F32 && quant.is_none() {
                1e-5
            } else {
                1e-2
            };
            let case = format!("{shape:?} -> {n} {dtype:?} {quant:?}");
            assert!(max_rel(&fast, &plain) < tol, "{case}: values");
            let (dxf, dxp) = (
                gf.get(x.as_tensor()).unwrap(),
                gp.get(x.as_tensor()).unwrap(),
            );
            assert_eq!(dxf.dtype(), dtype, "{case}");
            assert!(max_rel(dxf, dxp) < tol, "{case}: input gradient");
            assert!(
                gf.get(&w).is_none(),
                "{case}: the frozen weight got a gradient"
            );
        }
    }

    #[test]
    fn wrong_input_width_is_an_error() {
        let lin = Linear::new(rand(&[5, 8], 1).to_dtype(DType::BF16).unwrap(), None, None).unwrap();
        let x = rand(&[2, 7], 2).to_dtype(DType::BF16).unwrap();
        assert!(lin.forward(&x).is_err());
    }
}
