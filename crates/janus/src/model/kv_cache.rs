//! The preallocated, batched key/value cache the decoder writes into.

use candle_core::{DType, Device, Result, Tensor};

use crate::config::TextConfig;

/// Preallocated key/value storage for every layer, owned by the caller.
///
/// One row per sequence in the batch (for classifier-free guidance: two rows per image).
/// The cache knows its own length; the RoPE offset of the next forward is that length.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: (k, v), each `(B, H_kv, max_len, Dh)`.
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    max_len: usize,
    batch: usize,
}

impl KvCache {
    /// Allocates a cache for `batch` rows of up to `max_len` positions.
    pub fn new(
        cfg: &TextConfig,
        batch: usize,
        max_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            max_len,
            batch,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets the contents (keeps the allocation).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Forgets every position from `len` on, in every row (speculative decoding rolls back
    /// the drafts it did not accept); the next forward writes from `len`.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            candle_core::bail!(
                "cannot truncate a KV cache of {} positions to {len}",
                self.len
            );
        }
        self.len = len;
        Ok(())
    }

    /// Writes `t` new positions for `layer` and returns the filled prefix (k, v).
    pub(super) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let (kc, vc) = &self.layers[layer];
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        let end = self.len + t;
        Ok((kc.narrow(2, 0, end)?, vc.narrow(2, 0, end)?))
    }

    /// Counts `t` positions written by every layer's [`Self::append`] as filled.
    pub(super) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
