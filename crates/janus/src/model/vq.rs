//! LlamaGen's VQ-16 image tokenizer: encoder, L2-normalised codebook, decoder.
//!
//! Checkpoint names (original layout): `gen_vision_model.{encoder, decoder, quantize,
//! quant_conv, post_quant_conv}`; levels under `{en,de}coder.conv_blocks.L.{res, attn,
//! downsample|upsample}`, the middle under `mid.{0,1,2}`. `quantize.codebook_used` is a
//! training statistic and is not loaded.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::conv::Conv2d;

use super::ops::{kernel_inputs, run_bf16_kernel, softmax_last};
use crate::config::VqConfig;

const GROUPS: usize = 32;
const NORM_EPS: f64 = 1e-6;

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Conv2d::load(cin, cout, k, stride, pad, vb)
}

fn norm(c: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(c, vb)
}

/// GroupNorm (32 groups) with the SiLU that usually follows it fused in: the kernel for
/// bf16 CPU tensors without gradient, candle's `GroupNorm` then `silu` otherwise.
#[derive(Debug, Clone)]
struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
}

impl GroupNorm {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let (weight, bias) = (vb.get(c, "weight")?, vb.get(c, "bias")?);
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), c, GROUPS, NORM_EPS)?;
        Ok(Self {
            inner,
            weight,
            bias,
        })
    }

    /// # Shapes
    /// `(B, C, H, W) -> (B, C, H, W)`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// GroupNorm then SiLU.
    fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, true)
    }

    fn forward_act(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        use crate::kernels::{fused::group_norm_bf16, isa};
        let inputs = [x, &self.weight, &self.bias];
        if x.rank() == 4 && kernel_inputs(&inputs) {
            let (_, c, h, w) = x.dims4()?;
            if c != self.weight.elem_count() || c % GROUPS != 0 {
                candle_core::bail!(
                    "GroupNorm of {} channels over {:?}",
                    self.weight.elem_count(),
                    x.dims()
                );
            }
            let eps = NORM_EPS as f32;
            let y = run_bf16_kernel(&inputs, x.elem_count(), x.dims(), |s, out| {
                group_norm_bf16(s[0], c, h * w, GROUPS, s[1], s[2], eps, silu, out, isa())
            })?;
            if let Some(y) = y {
                return Ok(y);
            }
        }
        let y = self.inner.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }
}

#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: norm(cin, vb.pp("norm1"))?,
            conv1: conv(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            norm2: norm(cout, vb.pp("norm2"))?,
            conv2: conv(cout, cout, 3, 1, 1, vb.pp("conv2"))?,
            nin_shortcut: if cin != cout {
                Some(conv(cin, cout, 1, 1, 0, vb.pp("nin_shortcut"))?)
            } else {
                None
            },
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let x = match &self.nin_shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        super::ops::add(&x, &h)
    }
}

/// Single-head spatial self-attention over all h*w positions.
#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: norm(c, vb.pp("norm"))?,
            q: conv(c, c, 1, 1, 0, vb.pp("q"))?,
            k: conv(c, c, 1, 1, 0, vb.pp("k"))?,
            v: conv(c, c, 1, 1, 0, vb.pp("v"))?,
            proj_out: conv(c, c, 1, 1, 0, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x)?;
        let q = self
            .q
            .forward(&hn)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?; // (B, HW, C)
        let k = self.k.forward(&hn)?.reshape((b, c, h * w))?; // (B, C, HW)
        let v = self.v.forward(&hn)?.reshape((b, c, h * w))?; // (B, C, HW)
        let scores = (q.contiguous()?.matmul(&k)? * (c as f64).powf(-0.5))?; // (B, HWq, HWk)
        let probs = softmax_last(&scores)?;
        let out = v.matmul(&probs.transpose(1, 2)?.contiguous()?)?; // (B, C, HWq)
        let out = self.proj_out.forward(&out.reshape((b, c, h, w))?)?;
        super::ops::add(x, &out)
    }
}

/// One resolution level: ResnetBlocks (each followed by attention at the coarsest level)
/// and an optional resampling conv.
#[derive(Debug, Clone)]
struct Level {
    res: Vec<ResnetBlock>,
    attn: Vec<AttnBlock>,
    resample: Option<Conv2d>,
}

impl Level {
    fn forward(&self, x: &Tensor, upsample: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, r) in self.res.iter().enumerate() {
            h = r.forward(&h)?;
            if let Some(a) = self.attn.get(i) {
                h = a.forward(&h)?;
            }
        }
        match &self.resample {
            None => Ok(h),
            Some(c) if upsample => {
                // The reference's Upsample goes through f32 for bf16; nearest copies values,
                // so the round trip changes no bits and is left out.
                c.forward(&upsample2x(&h)?)
            }
            Some(c) => {
                // Downsample: pad right and bottom by one, then a stride-2 3x3 conv.
                let padded = h
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                c.forward(&padded)
            }
        }
    }
}

/// Nearest-neighbour upsampling by 2 of `(B, C, H, W)`: a parallel copy for bf16 CPU
/// tensors without gradient (candle's runs on one thread), candle's op otherwise.
fn upsample2x(x: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let (b, c, h, w) = x.dims4()?;
    if h * w > 0 {
        let y = run_bf16_kernel(&[x], b * c * 4 * h * w, &[b, c, 2 * h, 2 * w], |s, out| {
            out.par_chunks_mut(4 * w)
                .zip(s[0].par_chunks(w))
                .for_each(|(rows, src)| {
                    // Source row i of a plane becomes output rows 2i and 2i + 1.
                    let (top, bottom) = rows.split_at_mut(2 * w);
                    for (pair, &v) in top.chunks_exact_mut(2).zip(src) {
                        pair.fill(v);
                    }
                    bottom.copy_from_slice(top);
                })
        })?;
        if let Some(y) = y {
            return Ok(y);
        }
    }
    x.upsample_nearest2d(2 * h, 2 * w)
}

fn mid(c: usize, vb: VarBuilder) -> Result<(ResnetBlock, AttnBlock, ResnetBlock)> {
    Ok((
        ResnetBlock::new(c, c, vb.pp("0"))?,
        AttnBlock::new(c, vb.pp("1"))?,
        ResnetBlock::new(c, c, vb.pp("2"))?,
    ))
}

fn mid_forward(m: &(ResnetBlock, AttnBlock, ResnetBlock), x: &Tensor) -> Result<Tensor> {
    m.2.forward(&m.1.forward(&m.0.forward(x)?)?)
}

/// Image -> latent (before quant_conv).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let ch = cfg.ch;
        let n = cfg.ch_mult.len();
        let conv_in = conv(cfg.in_channels, ch, 3, 1, 1, vb.pp("conv_in"))?;
        let mut levels = Vec::with_capacity(n);
        let mut block_in = ch;
        for (l, m) in cfg.ch_mult.iter().enumerate() {
            let lvb = vb.pp("conv_blocks").pp(l);
            let block_out = ch * m;
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for j in 0..cfg.num_res_blocks {
                res.push(ResnetBlock::new(block_in, block_out, lvb.pp("res").pp(j))?);
                block_in = block_out;
                if l == n - 1 {
                    attn.push(AttnBlock::new(block_in, lvb.pp("attn").pp(j))?);
                }
            }
            let resample = if l != n - 1 {
                Some(conv(
                    block_in,
                    block_in,
                    3,
                    2,
                    0,
                    lvb.pp("downsample.conv"),
                )?)
            } else {
                None
            };
            levels.push(Level {
                res,
                attn,
                resample,
            });
        }
        Ok(Self {
            conv_in,
            levels,
            mid: mid(block_in, vb.pp("mid"))?,
            norm_out: norm(block_in, vb.pp("norm_out"))?,
            conv_out: conv(block_in, cfg.z_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    /// # Shapes
    /// `(B, 3, H, W) -> (B, z, H/16, W/16)`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for level in &self.levels {
            h = level.forward(&h, false)?;
        }
        let h = mid_forward(&self.mid, &h)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// Latent -> image in [-1, 1] (roughly; not clipped).
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: (ResnetBlock, AttnBlock, ResnetBlock),
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let ch = cfg.ch;
        let n = cfg.ch_mult.len();
        let mut block_in = ch * cfg.ch_mult[n - 1];
        let conv_in = conv(cfg.z_channels, block_in, 3, 1, 1, vb.pp("conv_in"))?;
        let mid = mid(block_in, vb.pp("mid"))?;
        let mut levels = Vec::with_capacity(n);
        // conv_blocks.0 is the coarsest level (ch_mult read back to front).
        for (k, l) in (0..n).rev().enumerate() {
            let lvb = vb.pp("conv_blocks").pp(k);
            let block_out = ch * cfg.ch_mult[l];
            let mut res = Vec::new();
            let mut attn = Vec::new();
            for j in 0..cfg.num_res_blocks + 1 {
                res.push(ResnetBlock::new(block_in, block_out, lvb.pp("res").pp(j))?);
                block_in = block_out;
                if l == n - 1 {
                    attn.push(AttnBlock::new(block_in, lvb.pp("attn").pp(j))?);
                }
            }
            let resample = if l != 0 {
                Some(conv(block_in, block_in, 3, 1, 1, lvb.pp("upsample.conv"))?)
            } else {
                None
            };
            levels.push(Level {
                res,
                attn,
                resample,
            });
        }
        Ok(Self {
            conv_in,
            mid,
            levels,
            norm_out: norm(block_in, vb.pp("norm_out"))?,
            conv_out: conv(block_in, cfg.in_channels, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    /// # Shapes
    /// `(B, z, h, w) -> (B, 3, 16h, 16w)`
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(z)?;
        let mut h = mid_forward(&self.mid, &h)?;
        for level in &self.levels {
            h = level.forward(&h, true)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?)
    }
}

/// The VQ model: encoder + quant_conv + codebook, and post_quant_conv + decoder.
#[derive(Debug, Clone)]
pub struct VqModel {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    /// Codebook with rows L2-normalised once at load, `(K, e)`.
    codebook: Tensor,
    cfg: VqConfig,
}

/// `F.normalize(x, p=2, dim=-1)`: x / max(||x||, 1e-12).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&n)
}

impl VqModel {
    /// Builds from `gen_vision_model.*`.
    pub fn new(cfg: &VqConfig, vb: VarBuilder) -> Result<Self> {
        let raw = vb.get(
            (cfg.codebook_size, cfg.codebook_embed_dim),
            "quantize.embedding.weight",
        )?;
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            quant_conv: conv(
                cfg.z_channels,
                cfg.codebook_embed_dim,
                1,
                1,
                0,
                vb.pp("quant_conv"),
            )?,
            post_quant_conv: conv(
                cfg.codebook_embed_dim,
                cfg.z_channels,
                1,
                1,
                0,
                vb.pp("post_quant_conv"),
            )?,
            codebook: l2_normalize(&raw)?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration this model was built with.
    pub fn config(&self) -> &VqConfig {
        &self.cfg
    }

    /// Encoder output after quant_conv, before quantisation.
    ///
    /// # Shapes
    /// `(B, 3, H, W)` in [-1, 1] -> `(B, e, H/16, W/16)`
    pub fn encode_latent(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(self.codebook.dtype())?;
        self.quant_conv.forward(&self.encoder.forward(&x)?)
    }

    /// Nearest codebook entry (after L2-normalising both sides) for every latent position.
    ///
    /// # Shapes
    /// `(B, e, h, w) -> (B, h*w)` u32 codes, row-major over (h, w).
    pub fn quantize(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, e, h, w) = latent.dims4()?;
        let z = latent.permute((0, 2, 3, 1))?.reshape((b * h * w, e))?; // (BHW, e)
        let z = l2_normalize(&z.to_dtype(DType::F32)?)?;
        let cb = self.codebook.to_dtype(DType::F32)?;
        // |z|^2 + |c|^2 - 2 z.c, as the reference computes it.
        let zz = z.sqr()?.sum_keepdim(1)?; // (BHW, 1)
        let cc = cb.sqr()?.sum(1)?.unsqueeze(0)?; // (1, K)
        let zc = z.matmul(&cb.t()?)?; // (BHW, K)
        let d = zz.broadcast_add(&cc)?.broadcast_sub(&(zc * 2.0)?)?;
        d.argmin(1)?.reshape((b, h * w))
    }

    /// Image to codes.
    ///
    /// # Shapes
    /// `(B, 3, H, W)` in [-1, 1] -> `(B, (H/16)*(W/16))` u32
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.quantize(&self.encode_latent(x)?)
    }

    /// Codes to decoder input: normalised codebook rows laid out channel-first.
    ///
    /// # Shapes
    /// `(B, h*w)` u32 -> `(B, e, h, w)`
    pub fn codes_to_latent(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w {
            candle_core::bail!("{n} codes cannot fill a {h}x{w} grid");
        }
        let k = self.cfg.codebook_size;
        let max = codes.to_dtype(DType::F32)?.max_all()?.to_scalar::<f32>()?;
        if max as usize >= k {
            candle_core::bail!("code {max} is outside the codebook of {k} entries");
        }
        let e = self.codebook.index_select(&codes.flatten_all()?, 0)?; // (B*h*w, e)
        e.reshape((b, h, w, self.cfg.codebook_embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// Codes to pixels in roughly [-1, 1].
    ///
    /// # Shapes
    /// `(B, h*w)` u32 -> `(B, 3, 16h, 16w)`
    pub fn decode_codes(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let z = self.codes_to_latent(codes, h, w)?;
        // On a pool thread, as the LLM's forward (see `kernels::on_pool`).
        crate::kernels::on_pool(|| self.decoder.forward(&self.post_quant_conv.forward(&z)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn bf16_upsampling_equals_candles_through_f32() {
        for (b, c, h, w) in [(1, 1, 1, 1), (2, 3, 5, 7), (1, 4, 24, 24)] {
            let n = b * c * h * w;
            let x = Tensor::arange(0f32, n as f32, &Device::Cpu)
                .unwrap()
                .affine(0.37, -3.0)
                .unwrap()
                .sin()
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
                .reshape((b, c, h, w))
                .unwrap();
            let want = x
                .to_dtype(DType::F32)
                .unwrap()
                .upsample_nearest2d(2 * h, 2 * w)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let got = super::upsample2x(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let (got, want) = (got.flatten_all().unwrap(), want.flatten_all().unwrap());
            assert_eq!(
                got.to_vec1::<half::bf16>().unwrap(),
                want.to_vec1::<half::bf16>().unwrap(),
                "{b}x{c}x{h}x{w}"
            );
        }
    }
}
