//! A loaded model directory ready for both tasks: model, tokenizer and image processor.
//!
//! This is the layer the CLI (and later the server) talks to: text and images in, text
//! and images out.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::config::JanusConfig;
use crate::engine::{
    self, Finish, GenerateParams, SamplingParams, Timings, UnderstandInput, UnderstandParams,
};
use crate::error::{Error, Result};
use crate::kernels::quant::QuantFormat;
use crate::model::Janus;
use crate::processor::{
    self, images_in_order, ImageProcessorConfig, JanusTokenizer, Message, PreparedPrompt,
};
use crate::weights;

/// Which floating-point type to compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeChoice {
    /// On a CPU with the bf16 kernels (AVX2 or AVX-512 BF16, see [`crate::kernels`]):
    /// bf16, which reads half the bytes of f32 per weight and so runs about twice as
    /// fast. Elsewhere f32 when the weights fit in half the RAM as f32 (candle's f32
    /// products are its fastest there), otherwise bf16.
    Auto,
    /// A fixed dtype.
    Fixed(DType),
}

impl std::str::FromStr for DTypeChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DTypeChoice::Auto),
            "f32" | "float32" => Ok(DTypeChoice::Fixed(DType::F32)),
            "bf16" | "bfloat16" => Ok(DTypeChoice::Fixed(DType::BF16)),
            "f16" | "float16" => Ok(DTypeChoice::Fixed(DType::F16)),
            other => Err(Error::InvalidInput(format!(
                "unsupported dtype {other:?} (use auto, f32, bf16 or f16)"
            ))),
        }
    }
}

impl DTypeChoice {
    /// The dtype to use for a model with `params` parameters on `device`.
    pub fn resolve(self, params: usize, device: &Device) -> DType {
        match self {
            DTypeChoice::Fixed(d) => d,
            DTypeChoice::Auto if !device.is_cpu() => DType::BF16,
            DTypeChoice::Auto if crate::kernels::isa() > crate::kernels::Isa::Plain => DType::BF16,
            DTypeChoice::Auto => match total_memory_bytes() {
                Some(mem) if (params as u64) * 4 > mem / 2 => DType::BF16,
                _ => DType::F32,
            },
        }
    }
}

fn total_memory_bytes() -> Option<u64> {
    meminfo_bytes("MemTotal:")
}

/// Memory the kernel says can be allocated without swapping (`MemAvailable` in
/// `/proc/meminfo`); `None` where that is unknown (not Linux, old kernels).
pub fn available_memory_bytes() -> Option<u64> {
    meminfo_bytes("MemAvailable:")
}

fn meminfo_bytes(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Understanding settings.
#[derive(Debug, Clone)]
pub struct UnderstandOptions {
    /// Sampling (temperature 0 = greedy).
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// System prompt; `None` for none. The reference uses
    /// [`processor::DEFAULT_SYSTEM_PROMPT`].
    pub system: Option<String>,
}

impl Default for UnderstandOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_new_tokens: 512,
            system: Some(processor::DEFAULT_SYSTEM_PROMPT.to_string()),
        }
    }
}

/// The answer to an understanding request.
#[derive(Debug, Clone)]
pub struct UnderstandResult {
    /// Decoded answer.
    pub text: String,
    /// Generated ids, stop token excluded.
    pub token_ids: Vec<u32>,
    /// Prompt length in tokens (images expanded).
    pub prompt_tokens: usize,
    /// Why generation ended.
    pub finish: Finish,
    /// Seconds per stage.
    pub timings: Timings,
}

/// The result of a text-to-image request.
#[derive(Debug, Clone)]
pub struct GenerateResult {
    /// Codes per image.
    pub codes: Vec<Vec<u32>>,
    /// Decoded 8-bit RGB images.
    pub images: Vec<image::RgbImage>,
    /// Whether all steps ran.
    pub finish: Finish,
    /// Seconds per stage.
    pub timings: Timings,
    /// Passes, codes per pass and draft acceptance of the sampling loop.
    pub stats: engine::DecodeStats,
}

/// How [`Pipeline::load_with`] loads a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The compute dtype.
    pub dtype: DTypeChoice,
    /// The LLM's and generation head's weights quantised as they load (CPU only; see
    /// [`Janus::load`]).
    pub quant: Option<QuantFormat>,
    /// A directory of LoRA adapters (peft's files) folded into the weights as they load
    /// (`W + alpha/r·B·A`, summed in f32 before any dtype conversion or quantisation):
    /// the same model `janus train merge` writes.
    pub lora: Option<PathBuf>,
    /// Where the weights go.
    pub device: Device,
}

impl LoadOptions {
    /// `dtype` on `device`, no quantisation, no adapters.
    pub fn new(dtype: DTypeChoice, device: Device) -> Self {
        Self {
            dtype,
            quant: None,
            lora: None,
            device,
        }
    }
}

/// Model, tokenizer and image processor of one model directory.
#[derive(Debug)]
pub struct Pipeline {
    /// The network.
    pub model: Janus,
    /// Tokenizer with resolved special tokens.
    pub tokenizer: JanusTokenizer,
    /// Understanding preprocessing settings.
    pub image_processor: ImageProcessorConfig,
    /// Where the files came from.
    pub dir: PathBuf,
}

impl Pipeline {
    /// Loads `dir` (config.json, weights, tokenizer.json, preprocessor_config.json) in
    /// `dtype` on `device`, the weights as the checkpoint holds them.
    pub fn load(dir: &Path, dtype: DTypeChoice, device: &Device) -> Result<Self> {
        Self::load_with(dir, &LoadOptions::new(dtype, device.clone()))
    }

    /// Loads `dir` as `opts` say: quantised weights, adapters folded in (see
    /// [`LoadOptions`]).
    pub fn load_with(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let LoadOptions {
            dtype,
            quant,
            lora,
            device,
        } = opts;
        let (dtype, quant, lora) = (*dtype, *quant, lora.as_deref());
        let t0 = Instant::now();
        if quant.is_some() && !device.is_cpu() {
            return Err(Error::InvalidInput(
                "quantised weights (--quant) run on the CPU only".into(),
            ));
        }
        let (cfg, store) = weights::load_model_dir(dir)?;
        let dtype = dtype.resolve(parameter_count(&store), device);
        let tokenizer = JanusTokenizer::from_file(dir.join("tokenizer.json"))?;
        tokenizer.check_vocab(cfg.text.vocab_size)?;
        let image_processor = ImageProcessorConfig::from_model_dir(dir)?;
        let backend = weights::CheckpointProvider::new(store.clone(), cfg.layout);
        let vb = match lora {
            None => backend.into_var_builder(dtype, device),
            Some(adapter_dir) => {
                let adapters = weights::lora::Adapters::load(adapter_dir, &cfg)?;
                let merged = weights::lora::MergedLoraProvider::new(backend, &adapters)?;
                candle_nn::VarBuilder::from_backend(Box::new(merged), dtype, device.clone())
            }
        };
        let model = Janus::load(&cfg, vb, quant)?;
        tracing::info!(
            "loaded {} ({} layout, {:?}{}) in {:.2}s",
            dir.display(),
            cfg.layout,
            dtype,
            quant.map(|q| format!(", {}", q.name())).unwrap_or_default(),
            t0.elapsed().as_secs_f64()
        );
        Ok(Self {
            model,
            tokenizer,
            image_processor,
            dir: dir.to_path_buf(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &JanusConfig {
        self.model.config()
    }

    /// Tokenises a conversation and preprocesses its images.
    ///
    /// The conversation should end with a user turn; an empty assistant turn is added
    /// for the answer.
    pub fn prepare_understanding(
        &self,
        messages: &[Message],
        system: Option<&str>,
    ) -> Result<(PreparedPrompt, UnderstandInput)> {
        let mut conv = messages.to_vec();
        if conv.last().map(|m| m.role) != Some(processor::Role::Assistant) {
            conv.push(Message::assistant(""));
        }
        let n = self.config().vision.num_image_tokens();
        let prepared = processor::prepare_understanding(&self.tokenizer, &conv, system, n)?;
        let device = self.model.device();
        let pixels = images_in_order(&conv)
            .map(|img| {
                let img = img.load()?;
                self.image_processor.preprocess_tensor(&img, device)
            })
            .collect::<Result<Vec<Tensor>>>()?;
        let pixel_values = if pixels.is_empty() {
            None
        } else {
            Some(Tensor::stack(&pixels, 0)?)
        };
        let input = UnderstandInput {
            input_ids: prepared.input_ids.clone(),
            image_spans: prepared.image_spans.iter().map(|r| r.start).collect(),
            pixel_values,
        };
        Ok((prepared, input))
    }

    /// Answers a conversation. `on_text` receives the answer piece by piece as it is
    /// generated and may stop it.
    pub fn understand(
        &self,
        messages: &[Message],
        opts: &UnderstandOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<UnderstandResult> {
        let t0 = Instant::now();
        let (prepared, input) = self.prepare_understanding(messages, opts.system.as_deref())?;
        let max_pos = self.config().text.max_position_embeddings;
        if prepared.input_ids.len() >= max_pos {
            return Err(Error::InvalidInput(format!(
                "the prompt is {} tokens long (images included), but the model's context holds {max_pos}",
                prepared.input_ids.len()
            )));
        }
        let mut timings = Timings::default();
        timings.push("preprocess_s", t0.elapsed().as_secs_f64());
        let params = UnderstandParams {
            sampling: opts.sampling.clone(),
            max_new_tokens: opts.max_new_tokens,
            eos_token_id: self.tokenizer.special().eos,
        };
        let mut stream = self.tokenizer.stream(true);
        let mut stream_err = None;
        let out = engine::understand(&self.model, &input, &params, |id| match stream.push(id) {
            Ok(Some(piece)) => on_text(&piece),
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => {
                stream_err = Some(e);
                ControlFlow::Break(())
            }
        })?;
        if let Some(e) = stream_err {
            return Err(e);
        }
        if let Some(rest) = stream.finish()? {
            // The callback cannot cancel anything any more; its verdict is moot.
            let _ = on_text(&rest);
        }
        timings.extend(&out.timings);
        Ok(UnderstandResult {
            text: self.tokenizer.decode(&out.token_ids, true)?,
            prompt_tokens: prepared.input_ids.len(),
            token_ids: out.token_ids,
            finish: out.finish,
            timings,
        })
    }

    /// Generates `params.parallel` images for `prompt`. `on_step(done, total)` reports
    /// progress and may cancel (then no images are decoded).
    pub fn generate(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_step: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<GenerateResult> {
        params.validate()?;
        let (cond, uncond) = processor::prepare_generation(&self.tokenizer, prompt)?;
        // Too long a prompt is the clearer message when both checks would fail.
        processor::check_prompt_length(
            cond.len(),
            self.config().gen_image_tokens(),
            self.config().text.max_position_embeddings,
        )?;
        self.check_generate_memory(cond.len(), params.parallel)?;
        let out = engine::generate_codes(&self.model, &cond, &uncond, params, on_step)?;
        let mut timings = out.timings.clone();
        if out.finish == Finish::Cancelled {
            return Ok(GenerateResult {
                codes: out.codes,
                images: Vec::new(),
                finish: out.finish,
                timings,
                stats: out.stats,
            });
        }
        let t0 = Instant::now();
        let images = self.decode_images(&out.codes)?;
        timings.push("vq_decode_s", t0.elapsed().as_secs_f64());
        Ok(GenerateResult {
            codes: out.codes,
            images,
            finish: out.finish,
            timings,
            stats: out.stats,
        })
    }

    /// Refuses a text-to-image request whose estimated memory
    /// ([`engine::estimate_generate_memory`]) exceeds the memory available now, before
    /// anything is allocated: the host's `MemAvailable` on the CPU, the driver's free
    /// memory on a GPU; skipped where that is unknown.
    pub fn check_generate_memory(&self, prompt_len: usize, parallel: usize) -> Result<()> {
        let device = self.model.device();
        let available = if device.is_cpu() {
            available_memory_bytes()
        } else {
            crate::device::gpu_free_memory(device)
        };
        let Some(available) = available else {
            return Ok(());
        };
        let est = engine::estimate_generate_memory(
            self.config(),
            prompt_len,
            parallel,
            self.model.dtype(),
        );
        if est.total > available {
            return Err(Error::InvalidInput(format!(
                "generating {parallel} images in parallel needs about {} of memory (KV cache {}, \
                 activations {}, VQ decode {}), but only {} is available on {}; use a smaller parallel \
                 count",
                human_bytes(est.total),
                human_bytes(est.kv_cache),
                human_bytes(est.activations),
                human_bytes(est.vq_decode),
                human_bytes(available),
                crate::device::name(device),
            )));
        }
        Ok(())
    }

    /// The generation tokenizer on its own: an image to its VQ codes.
    ///
    /// The image is brought to the generation resolution the way understanding inputs are
    /// (long side resized with Pillow-exact bicubic, centred on a grey square) and scaled
    /// to [-1, 1]. Returns `gen_grid`^2 codes, row-major.
    pub fn vq_encode(&self, img: &image::DynamicImage) -> Result<Vec<u32>> {
        let size = self.config().gen_image_size() as u32;
        let prep = ImageProcessorConfig {
            image_size: size,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ..self.image_processor.clone()
        };
        let px = prep
            .preprocess_tensor(img, self.model.device())?
            .unsqueeze(0)?;
        let codes = self.model.vq.encode(&px.to_dtype(self.model.dtype())?)?;
        Ok(codes.flatten_all()?.to_vec1::<u32>()?)
    }

    /// The generation tokenizer on its own: codes back to an image.
    pub fn vq_decode(&self, codes: &[u32]) -> Result<image::RgbImage> {
        let mut images = self.decode_images(&[codes.to_vec()])?;
        Ok(images.remove(0))
    }

    /// Decodes code grids to 8-bit RGB images (reference post-processing).
    pub fn decode_images(&self, codes: &[Vec<u32>]) -> Result<Vec<image::RgbImage>> {
        let pixels = engine::decode_codes(&self.model, codes)?;
        engine::to_rgb8(&pixels)?
            .into_iter()
            .map(|(w, h, bytes)| {
                image::RgbImage::from_raw(w, h, bytes)
                    .ok_or_else(|| Error::InvalidInput("decoded image has the wrong size".into()))
            })
            .collect()
    }
}

/// A byte count for messages: `1.5 GiB`, `300.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Parameters stored in a checkpoint (for sizing decisions).
fn parameter_count(store: &weights::TensorStore) -> usize {
    store
        .names()
        .filter_map(|n| store.shape(n))
        .map(|s| s.iter().product::<usize>())
        .sum()
}
