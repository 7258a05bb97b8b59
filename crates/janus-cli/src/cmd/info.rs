//! `janus info`: what a checkpoint holds, from its file headers (no weights are loaded).

use std::fmt::Write as _;

use anyhow::Result;
use clap::Args;
use janus::info::{ModelInfo, Part};
use janus::pipeline::human_bytes;

use crate::args::ModelArgs;
use crate::progress::Progress;

/// Arguments of `janus info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    json: bool,
}

/// Runs `janus info`. Problems found are reported, not failed on: the exit status is 0
/// whenever the directory could be described.
pub fn run(a: InfoArgs, progress: &Progress) -> Result<()> {
    let dir = a.model.resolve_without_lora(progress)?;
    let mut info = ModelInfo::from_dir(&dir)?;
    info.dir = a.model.model_id();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", render(&info));
    }
    Ok(())
}

/// `1234567` -> `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234567` -> `1.2M`.
fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The human-readable report.
fn render(info: &ModelInfo) -> String {
    let mut s = String::new();
    let arch = &info.architecture;
    let (t, v, q) = (&arch.llm, &arch.vision, &arch.vq);
    let weight_files = info.files.iter().filter(|f| f.kind == "weights").count();
    // Writing to a String cannot fail.
    let _ = writeln!(s, "model     {}", info.dir);
    let _ = writeln!(s, "layout    {}", info.layout);
    let _ = writeln!(
        s,
        "weights   {}, {weight_files} file(s), {}",
        info.format,
        human_bytes(info.weight_bytes)
    );
    let _ = writeln!(s, "\nfiles");
    let width = info.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &info.files {
        let _ = writeln!(
            s,
            "  {:width$}  {:>10}  {}",
            f.name,
            human_bytes(f.bytes),
            f.kind
        );
    }
    let _ = writeln!(s, "\narchitecture");
    let _ = writeln!(
        s,
        "  LLM          D {}, {} layers, {} heads ({} kv, head_dim {}), FFN {}, vocab {}, context {}",
        t.hidden_size,
        t.layers,
        t.heads,
        t.kv_heads,
        t.head_dim,
        t.intermediate_size,
        t.vocab_size,
        t.context
    );
    let _ = writeln!(
        s,
        "  SigLIP       width {}, {} layers, {} heads, MLP {}, image {}, patch {} ({} tokens)",
        v.width, v.layers, v.heads, v.mlp, v.image_size, v.patch_size, v.image_tokens
    );
    let _ = writeln!(
        s,
        "  aligner      {} -> {} (mlp_gelu, depth {})",
        arch.aligner.input, arch.aligner.output, arch.aligner.depth
    );
    let _ = writeln!(
        s,
        "  gen_embed    {} x {}",
        arch.gen_embed[0], arch.gen_embed[1]
    );
    let _ = writeln!(
        s,
        "  gen_aligner  {} -> {} (mlp_gelu, depth {})",
        arch.gen_aligner.input, arch.gen_aligner.output, arch.gen_aligner.depth
    );
    let _ = writeln!(
        s,
        "  gen_head     {} -> {} -> {} codes",
        arch.gen_head.input, arch.gen_head.hidden, arch.gen_head.codes
    );
    let _ = writeln!(
        s,
        "  VQ           codebook {} x {}, z {}, ch {} x {:?}, {} res blocks, {}x{} codes -> {}x{} pixels",
        q.codebook_size,
        q.codebook_dim,
        q.z_channels,
        q.ch,
        q.ch_mult,
        q.num_res_blocks,
        q.grid,
        q.grid,
        q.image_size,
        q.image_size
    );
    let _ = writeln!(s, "\nparameters");
    let label_w = Part::ALL.iter().map(|p| p.label().len()).max().unwrap_or(0);
    for p in &info.parts {
        let _ = writeln!(
            s,
            "  {:label_w$}  {:>15}  {:>7}  {} tensors",
            p.part.label(),
            grouped(p.parameters),
            short(p.parameters),
            p.tensors
        );
    }
    let _ = writeln!(
        s,
        "  {:label_w$}  {:>15}  {:>7}  {} tensors",
        "total",
        grouped(info.parameters),
        short(info.parameters),
        info.tensors
    );
    let _ = writeln!(s, "\ndtypes on disk");
    for d in &info.dtypes {
        let _ = writeln!(
            s,
            "  {:<6} {} tensors, {} parameters, {}",
            d.dtype,
            d.tensors,
            grouped(d.parameters),
            human_bytes(d.bytes)
        );
    }
    let _ = writeln!(
        s,
        "\ntasks     understanding {}, generation {}, VQ encode {}",
        yes(info.tasks.understanding),
        yes(info.tasks.generation),
        yes(info.tasks.vq_encode)
    );
    if info.problems.is_empty() {
        let _ = writeln!(s, "problems  none");
    } else {
        let _ = writeln!(s, "problems  {}", info.problems.len());
        // Show a few per part; a missing part would otherwise list hundreds of tensors.
        const PER_PART: usize = 5;
        let mut shown: Vec<(Option<Part>, usize)> = Vec::new();
        for p in &info.problems {
            let count = match shown.iter_mut().find(|(part, _)| *part == p.part) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    shown.push((p.part, 1));
                    1
                }
            };
            if count <= PER_PART {
                let _ = writeln!(s, "  - {}", p.message);
            }
        }
        for (part, n) in shown.iter().filter(|(_, n)| *n > PER_PART) {
            let label = part.map_or("other", |p| p.label());
            let _ = writeln!(s, "  ... and {} more in {label}", n - PER_PART);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(short(1_480_000_000), "1.48B");
        assert_eq!(short(4_718_592), "4.7M");
    }
}
