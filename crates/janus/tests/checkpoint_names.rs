//! Checkpoint names, config sizes and weight files, checked against the real tensor lists
//! of the published checkpoints (`fixtures/checkpoints/janus-pro-{1b,7b}.{original,transformers}.tsv`).
//!
//! * the original -> transformers name map reproduces each transformers list exactly;
//! * the five published `config.json`s (fixtures in `tests/data/configs/`) give the sizes
//!   the tensor lists hold;
//! * the full-size model builds from each list without weights (`PlaceholderProvider`),
//!   reads every tensor but the ignored ones, and a wrong config fails naming the tensor;
//! * the tensor store reads safetensors and PyTorch files, single and sharded, and turns
//!   every broken file into an error naming it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use janus::config::{JanusConfig, Layout};
use janus::weights::{
    is_ignored, load_model_dir, parse_shape_list, to_transformers, var_builder, CheckpointProvider,
    PlaceholderProvider, Source, TensorStore,
};
use janus::Error;

const CHECKPOINTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/checkpoints");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

type Shapes = Vec<(String, Vec<usize>)>;

fn tsv(model: &str, layout: Layout) -> Shapes {
    let suffix = match layout {
        Layout::Original => "original",
        Layout::Transformers => "transformers",
    };
    let path = format!("{CHECKPOINTS}/janus-pro-{model}.{suffix}.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list = parse_shape_list(&text).unwrap();
    assert!(list.len() > 800, "{path}: only {} tensors", list.len());
    list
}

fn config(name: &str) -> JanusConfig {
    JanusConfig::from_file(Path::new(&format!("{DATA}/configs/{name}.json"))).unwrap()
}

// ---------------------------------------------------------------------------------------
// Name map

#[test]
fn name_map_reproduces_the_transformers_lists() {
    for model in ["1b", "7b"] {
        let original = tsv(model, Layout::Original);
        let tf: HashMap<String, Vec<usize>> =
            tsv(model, Layout::Transformers).into_iter().collect();
        let mut used: BTreeMap<String, String> = BTreeMap::new();
        let mut use_once = |tf_name: &str, from: &str| {
            assert!(
                tf.contains_key(tf_name),
                "{model}: {from} -> {tf_name}, not in the list"
            );
            if let Some(prev) = used.insert(tf_name.to_string(), from.to_string()) {
                panic!("{model}: {tf_name} produced by both {prev} and {from}");
            }
            &tf[tf_name]
        };
        let mut ignored = 0;
        for (name, shape) in &original {
            if is_ignored(name) {
                assert_eq!(to_transformers(name), None, "{name}");
                ignored += 1;
                continue;
            }
            let source =
                to_transformers(name).unwrap_or_else(|| panic!("{model}: {name} has no mapping"));
            match source {
                Source::Name(n) => {
                    assert_eq!(use_once(&n, name), shape, "{model}: {name} -> {n}");
                }
                Source::Unsqueeze(n) => {
                    let stored = use_once(&n, name).clone();
                    assert_eq!(
                        [&[1], &stored[..]].concat(),
                        *shape,
                        "{model}: {name} -> {n}"
                    );
                }
                Source::Concat(parts) => {
                    assert!(parts.len() > 1);
                    let share = shape[0] / parts.len();
                    assert_eq!(share * parts.len(), shape[0], "{model}: {name}");
                    for p in &parts {
                        let want = [&[share], &shape[1..]].concat();
                        assert_eq!(*use_once(p, name), want, "{model}: {name} part {p}");
                    }
                }
            }
        }
        // attn_pool (13 tensors) and quantize.codebook_used.
        assert_eq!(ignored, 14, "{model}");
        let produced: BTreeSet<&String> = used.keys().collect();
        let listed: BTreeSet<&String> = tf.keys().collect();
        let missing: Vec<_> = listed.difference(&produced).collect();
        assert!(missing.is_empty(), "{model}: never produced: {missing:?}");
        assert_eq!(produced, listed);
    }
}

// ---------------------------------------------------------------------------------------
// Configs

/// (config fixture, tensor list it belongs to)
const CONFIGS: [(&str, &str); 5] = [
    ("janus-1.3b.original", "1b"),
    ("janus-pro-1b.original", "1b"),
    ("janus-pro-1b.transformers", "1b"),
    ("janus-pro-7b.original", "7b"),
    ("janus-pro-7b.transformers", "7b"),
];

fn count_indices(list: &Shapes, prefix: &str) -> usize {
    list.iter()
        .filter_map(|(n, _)| {
            n.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn published_configs_give_the_checkpoint_sizes() {
    for (name, model) in CONFIGS {
        let cfg = config(name);
        let want_layout = if name.ends_with("transformers") {
            Layout::Transformers
        } else {
            Layout::Original
        };
        assert_eq!(cfg.layout, want_layout, "{name}");
        let list = tsv(model, Layout::Original);
        let shapes: HashMap<&str, &[usize]> = list
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let shape = |n: &str| -> Vec<usize> {
            shapes
                .get(n)
                .unwrap_or_else(|| panic!("{n} not in {model} list"))
                .to_vec()
        };
        let (t, v, q) = (&cfg.text, &cfg.vision, &cfg.vq);
        let d = t.hidden_size;
        let l = "language_model.model.layers.0";
        assert_eq!(
            shape("language_model.model.embed_tokens.weight"),
            [t.vocab_size, d],
            "{name}"
        );
        assert_eq!(
            shape("language_model.lm_head.weight"),
            [t.vocab_size, d],
            "{name}"
        );
        assert_eq!(
            count_indices(&list, "language_model.model.layers."),
            t.num_hidden_layers
        );
        let q_rows = t.num_attention_heads * t.head_dim;
        let kv_rows = t.num_key_value_heads * t.head_dim;
        assert_eq!(
            shape(&format!("{l}.self_attn.q_proj.weight")),
            [q_rows, d],
            "{name}"
        );
        assert_eq!(
            shape(&format!("{l}.self_attn.k_proj.weight")),
            [kv_rows, d],
            "{name}"
        );
        assert_eq!(
            shape(&format!("{l}.self_attn.o_proj.weight")),
            [d, q_rows],
            "{name}"
        );
        assert_eq!(
            shape(&format!("{l}.mlp.gate_proj.weight")),
            [t.intermediate_size, d]
        );
        assert!(
            !t.tie_word_embeddings && !t.attention_bias && !t.mlp_bias,
            "{name}"
        );
        assert_eq!((t.rms_norm_eps, t.rope_theta), (1e-6, 10000.0), "{name}");
        assert_eq!(t.max_position_embeddings, 16384, "{name}");

        let vt = "vision_model.vision_tower";
        let c = v.hidden_size;
        assert_eq!(
            shape(&format!("{vt}.patch_embed.proj.weight")),
            [c, 3, v.patch_size, v.patch_size]
        );
        assert_eq!(
            shape(&format!("{vt}.pos_embed")),
            [1, v.num_image_tokens(), c],
            "{name}"
        );
        assert_eq!(
            count_indices(&list, &format!("{vt}.blocks.")),
            v.num_layers,
            "{name}"
        );
        assert_eq!(
            shape(&format!("{vt}.blocks.0.attn.qkv.weight")),
            [3 * c, c],
            "{name}"
        );
        assert_eq!(
            shape(&format!("{vt}.blocks.0.mlp.fc1.weight")),
            [v.intermediate_size, c]
        );
        assert_eq!(c % v.num_heads, 0);
        assert_eq!(v.layer_norm_eps, 1e-6, "{name}");

        for (part, mlp) in [("aligner", &cfg.aligner), ("gen_aligner", &cfg.gen_aligner)] {
            assert_eq!(mlp.depth, 2, "{name} {part}");
            assert_eq!(
                shape(&format!("{part}.layers.0.weight")),
                [mlp.n_embed, mlp.input_dim]
            );
            assert_eq!(
                shape(&format!("{part}.layers.2.weight")),
                [mlp.n_embed, mlp.n_embed]
            );
            assert_eq!(mlp.n_embed, d, "{name} {part}");
        }
        assert_eq!(cfg.aligner.input_dim, c);
        let gh = &cfg.gen_head;
        assert_eq!(gh.n_embed, d, "{name}");
        assert_eq!(
            shape("gen_head.output_mlp_projector.weight"),
            [gh.image_token_embed, gh.n_embed]
        );
        assert_eq!(
            shape("gen_head.vision_head.weight"),
            [gh.image_token_size, gh.image_token_embed]
        );
        assert_eq!(
            shape("gen_embed.weight"),
            [cfg.gen_embed.0, cfg.gen_embed.1],
            "{name}"
        );
        assert_eq!(cfg.gen_aligner.input_dim, cfg.gen_embed.1, "{name}");

        let g = "gen_vision_model";
        let top = q.ch * q.ch_mult.last().unwrap();
        assert_eq!(
            shape(&format!("{g}.quantize.embedding.weight")),
            [q.codebook_size, q.codebook_embed_dim]
        );
        assert_eq!(
            shape(&format!("{g}.quant_conv.weight")),
            [q.codebook_embed_dim, q.z_channels, 1, 1]
        );
        assert_eq!(
            shape(&format!("{g}.encoder.conv_in.weight")),
            [q.ch, q.in_channels, 3, 3]
        );
        assert_eq!(
            shape(&format!("{g}.decoder.conv_in.weight")),
            [top, q.z_channels, 3, 3]
        );
        assert_eq!(
            shape(&format!("{g}.decoder.conv_out.weight")),
            [q.in_channels, q.ch, 3, 3]
        );
        assert_eq!(
            count_indices(&list, &format!("{g}.decoder.conv_blocks.")),
            q.ch_mult.len()
        );
        assert_eq!(
            count_indices(&list, &format!("{g}.encoder.conv_blocks.0.res.")),
            q.num_res_blocks
        );
        assert_eq!(
            count_indices(&list, &format!("{g}.decoder.conv_blocks.0.res.")),
            q.num_res_blocks + 1
        );
        assert_eq!(cfg.gen_image_tokens(), 576, "{name}");
        assert_eq!(cfg.gen_image_size(), 384, "{name}");
    }
}

#[test]
fn both_layouts_describe_the_same_model() {
    for model in ["1b", "7b"] {
        let orig = config(&format!("janus-pro-{model}.original"));
        let tf = config(&format!("janus-pro-{model}.transformers"));
        assert_eq!(
            JanusConfig {
                layout: Layout::Original,
                ..tf
            },
            orig,
            "{model}"
        );
    }
    let old = config("janus-1.3b.original");
    assert_eq!(old, config("janus-pro-1b.original"));
}

// ---------------------------------------------------------------------------------------
// Full-size model on shape lists (no weights). Uses `janus::model::Janus::new`.

fn build(cfg: &JanusConfig, layout: Layout, list: Shapes) -> (janus::Result<()>, BTreeSet<String>) {
    let backend = PlaceholderProvider::new(layout, list, "test shape list");
    let usage = backend.usage();
    let vb = backend.into_var_builder(DType::F32, &Device::Cpu);
    let built = janus::model::Janus::new(cfg, vb)
        .map(|_| ())
        .map_err(Error::from);
    (built, usage.served())
}

#[test]
fn full_model_builds_from_every_checkpoint_list() {
    for (model, layout, cfg_name) in [
        ("1b", Layout::Original, "janus-pro-1b.original"),
        ("1b", Layout::Transformers, "janus-pro-1b.transformers"),
        ("7b", Layout::Original, "janus-pro-7b.original"),
        ("7b", Layout::Transformers, "janus-pro-7b.transformers"),
    ] {
        let list = tsv(model, layout);
        let expected: BTreeSet<String> = list
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !is_ignored(n))
            .collect();
        let (built, served) = build(&config(cfg_name), layout, list);
        if let Err(e) = built {
            panic!("{model} {layout}: {e}");
        }
        let unread: Vec<_> = expected.difference(&served).collect();
        assert!(
            unread.is_empty(),
            "{model} {layout}: never read: {unread:?}"
        );
        assert_eq!(served, expected, "{model} {layout}");
    }
}

/// Parses "tensor NAME has shape [..], expected [..]" out of an error message.
fn parse_mismatch(msg: &str) -> Option<(String, Vec<usize>, Vec<usize>)> {
    let rest = &msg[msg.find("tensor ")? + 7..];
    let (name, rest) = rest.split_once(" has shape ")?;
    let (found, rest) = rest.split_once(", expected ")?;
    let expected = &rest[..=rest.find(']')?];
    let dims = |s: &str| -> Option<Vec<usize>> {
        let s = s.trim().strip_prefix('[')?.strip_suffix(']')?;
        s.split(',').map(|d| d.trim().parse().ok()).collect()
    };
    Some((name.to_string(), dims(found)?, dims(expected)?))
}

#[test]
fn wrong_config_names_the_tensor_and_both_shapes() {
    for layout in [Layout::Original, Layout::Transformers] {
        let cfg = match layout {
            Layout::Original => config("janus-pro-7b.original"),
            Layout::Transformers => config("janus-pro-7b.transformers"),
        };
        let list = tsv("1b", layout);
        let shapes: HashMap<String, Vec<usize>> = list.iter().cloned().collect();
        let (built, _) = build(&cfg, layout, list);
        let msg = built
            .expect_err("7B config on 1B tensors must fail")
            .to_string();
        let (name, found, expected) =
            parse_mismatch(&msg).unwrap_or_else(|| panic!("{layout}: unexpected message {msg:?}"));
        assert_eq!(shapes.get(&name), Some(&found), "{layout}: {msg}");
        assert_ne!(found, expected, "{msg}");
        assert!(
            !msg.contains('\n'),
            "{layout}: message should be one line: {msg:?}"
        );
    }
}

#[test]
fn mismatch_and_missing_messages_use_checkpoint_names() {
    // One wrong shape in an otherwise correct list: the exact message.
    let mut list = tsv("7b", Layout::Original);
    for (n, s) in list.iter_mut() {
        if n == "gen_head.vision_head.weight" {
            *s = vec![16384, 2048];
        }
    }
    let (built, _) = build(&config("janus-pro-7b.original"), Layout::Original, list);
    assert_eq!(
        built.unwrap_err().to_string(),
        "tensor gen_head.vision_head.weight has shape [16384, 2048], expected [16384, 4096]"
    );

    // The same in the transformers layout names the transformers tensor.
    let mut list = tsv("7b", Layout::Transformers);
    for (n, s) in list.iter_mut() {
        if n == "model.generation_head.vision_head.weight" {
            *s = vec![16384, 2048];
        }
    }
    let (built, _) = build(
        &config("janus-pro-7b.transformers"),
        Layout::Transformers,
        list,
    );
    assert_eq!(
        built.unwrap_err().to_string(),
        "tensor model.generation_head.vision_head.weight has shape [16384, 2048], \
         expected [16384, 4096]"
    );

    // A split qkv part with the wrong shape is named on its own.
    let k = "model.vision_model.encoder.layers.5.self_attn.k_proj.weight";
    let mut list = tsv("1b", Layout::Transformers);
    for (n, s) in list.iter_mut() {
        if n == k {
            *s = vec![1024, 512];
        }
    }
    let (built, _) = build(
        &config("janus-pro-1b.transformers"),
        Layout::Transformers,
        list,
    );
    assert_eq!(
        built.unwrap_err().to_string(),
        format!("tensor {k} has shape [1024, 512], expected [1024, 1024]")
    );

    // Missing tensors, in each layout's own names.
    for (layout, cfg, gone) in [
        (
            Layout::Original,
            "janus-pro-1b.original",
            "gen_vision_model.decoder.mid.1.q.bias",
        ),
        (
            Layout::Transformers,
            "janus-pro-1b.transformers",
            "model.vision_model.encoder.layers.0.self_attn.v_proj.bias",
        ),
        (
            Layout::Transformers,
            "janus-pro-1b.transformers",
            "model.vision_model.embeddings.position_embedding.weight",
        ),
    ] {
        let list: Shapes = tsv("1b", layout)
            .into_iter()
            .filter(|(n, _)| n != gone)
            .collect();
        let (built, _) = build(&config(cfg), layout, list);
        assert_eq!(
            built.unwrap_err().to_string(),
            format!("tensor {gone} is missing from the checkpoint (test shape list)")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Weight files

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("janus-weights-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// bf16 bits of an f32 that bf16 holds exactly (the test values are small multiples of 1/4).
fn bf16_bits(v: f32) -> u16 {
    (v.to_bits() >> 16) as u16
}

/// f16 bits of zero or a normal f32 that f16 holds exactly (sign, rebiased exponent, top
/// mantissa bits).
fn f16_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let b = v.to_bits();
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!(
        (1..31).contains(&exp) && b & 0x1fff == 0,
        "{v} is not exact in f16"
    );
    (((b >> 16) & 0x8000) | ((exp as u32) << 10) | ((b >> 13) & 0x3ff)) as u16
}

/// Writes a safetensors file with the `safetensors` crate: (name, dtype, shape, f32 values
/// converted to the dtype).
fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<f32>)]) {
    use safetensors::Dtype as D;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, _, values)| match dtype {
            D::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            D::BF16 => values
                .iter()
                .flat_map(|v| bf16_bits(*v).to_le_bytes())
                .collect(),
            D::F16 => values
                .iter()
                .flat_map(|v| f16_bits(*v).to_le_bytes())
                .collect(),
            other => panic!("{other:?}"),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, dtype, shape, _), b)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), b).unwrap();
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn quarters(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 / 4.0).collect()
}

#[test]
fn single_and_sharded_safetensors() {
    use safetensors::Dtype as D;
    let dir = Scratch::new("st");
    write_safetensors(
        &dir.path("model.safetensors"),
        &[
            ("a.weight", D::BF16, vec![2, 3], quarters(6)),
            ("a.bias", D::F16, vec![3], quarters(3)),
            ("b", D::F32, vec![4], quarters(4)),
        ],
    );
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(
        store.names().collect::<Vec<_>>(),
        ["a.bias", "a.weight", "b"]
    );
    assert_eq!(store.shape("a.weight"), Some(&[2, 3][..]));
    assert_eq!(store.dtype("a.weight"), Some(DType::BF16));
    assert_eq!(store.dtype("a.bias"), Some(DType::F16));
    assert_eq!(store.dtype("b"), Some(DType::F32));
    let w = store.load("a.weight", &Device::Cpu).unwrap();
    assert_eq!(w.dtype(), DType::BF16);
    assert_eq!(values(&w), quarters(6));
    assert_eq!(
        values(&store.load("a.bias", &Device::Cpu).unwrap()),
        quarters(3)
    );
    let e = store.load("nope", &Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::MissingTensor { .. }), "{e}");

    // Sharded: the index wins over a stray single file, and tensors route to their shard.
    let dir = Scratch::new("st-sharded");
    write_safetensors(
        &dir.path("model-00001-of-00002.safetensors"),
        &[("x", D::F32, vec![2], vec![1.0, 2.0])],
    );
    write_safetensors(
        &dir.path("model-00002-of-00002.safetensors"),
        &[("y", D::BF16, vec![1], vec![3.0])],
    );
    let index = r#"{"metadata": {"total_size": 10}, "weight_map": {
        "x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path("model.safetensors.index.json"), index).unwrap();
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(store.files().len(), 2);
    assert_eq!(values(&store.load("x", &Device::Cpu).unwrap()), [1.0, 2.0]);
    assert_eq!(values(&store.load("y", &Device::Cpu).unwrap()), [3.0]);
    assert!(store
        .file_of("y")
        .unwrap()
        .ends_with("model-00002-of-00002.safetensors"));
}

fn copy_fixture(from: &str, to: &Path) {
    std::fs::copy(format!("{DATA}/{from}"), to).unwrap();
}

#[test]
fn pytorch_bin_single_and_sharded() {
    // Made by scripts/fixtures/make_pth_fixtures.py.
    let dir = Scratch::new("pt");
    copy_fixture("pth_f32.bin", &dir.path("pytorch_model.bin"));
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(store.format(), janus::weights::Format::PyTorch);
    let cpu = Device::Cpu;
    let load = |n: &str| store.load(n, &cpu).unwrap();
    assert_eq!(store.dtype("layer.0.weight"), Some(DType::F32));
    assert_eq!(load("layer.0.weight").dims(), [2, 3]);
    assert_eq!(values(&load("layer.0.weight")), quarters(6));
    // A view at storage offset 4 of arange(10)/4, and one at offset 0.
    assert_eq!(values(&load("layer.0.bias")), [1.0, 1.25, 1.5]);
    assert_eq!(values(&load("layer.0.scale")), [0.0, 0.25]);
    // A transposed (Fortran-contiguous) tensor reads back in logical order.
    let t = load("layer.0.t");
    assert_eq!(t.dims(), [3, 2]);
    assert_eq!(values(&t), [0.0, 0.75, 0.25, 1.0, 0.5, 1.25]);

    let dir = Scratch::new("pt-bf16");
    copy_fixture("pth_bf16.bin", &dir.path("pytorch_model.bin"));
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(store.dtype("layer.1.weight"), Some(DType::BF16));
    assert_eq!(store.dtype("layer.1.bias"), Some(DType::F16));
    assert_eq!(
        values(&store.load("layer.1.weight", &cpu).unwrap()),
        quarters(8)
    );
    assert_eq!(
        values(&store.load("layer.1.bias", &cpu).unwrap()),
        quarters(2)
    );

    // Sharded like Janus-Pro-7B.
    let dir = Scratch::new("pt-sharded");
    copy_fixture("pth_f32.bin", &dir.path("pytorch_model-00001-of-00002.bin"));
    copy_fixture(
        "pth_bf16.bin",
        &dir.path("pytorch_model-00002-of-00002.bin"),
    );
    let index = r#"{"metadata": {}, "weight_map": {
        "layer.0.weight": "pytorch_model-00001-of-00002.bin",
        "layer.1.weight": "pytorch_model-00002-of-00002.bin"}}"#;
    std::fs::write(dir.path("pytorch_model.bin.index.json"), index).unwrap();
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(store.len(), 6);
    assert_eq!(
        values(&store.load("layer.1.weight", &cpu).unwrap()),
        quarters(8)
    );
    assert_eq!(
        values(&store.load("layer.0.bias", &cpu).unwrap()),
        [1.0, 1.25, 1.5]
    );
}

#[test]
fn safetensors_is_preferred_over_pytorch() {
    let dir = Scratch::new("prefer");
    copy_fixture("pth_f32.bin", &dir.path("pytorch_model.bin"));
    write_safetensors(
        &dir.path("model.safetensors"),
        &[("s", safetensors::Dtype::F32, vec![1], vec![7.0])],
    );
    let store = TensorStore::open(&dir.0).unwrap();
    assert_eq!(store.format(), janus::weights::Format::Safetensors);
    assert_eq!(store.names().collect::<Vec<_>>(), ["s"]);
}

/// Opens `dir` and expects an `Error::Weights` naming `file`, whose message contains `what`.
fn expect_weights_error(dir: &Path, file: &str, what: &str) {
    match TensorStore::open(dir) {
        Err(e @ Error::Weights { .. }) => {
            let msg = e.to_string();
            let Error::Weights { path, .. } = &e else {
                unreachable!()
            };
            assert!(path.ends_with(file), "{msg}");
            assert!(msg.contains(what), "{msg:?} should mention {what:?}");
        }
        Err(other) => panic!("expected a weights error for {file}, got {other:?}"),
        Ok(s) => panic!("{file} opened: {s:?}"),
    }
}

#[test]
fn broken_weight_files_are_errors_naming_the_file() {
    use safetensors::Dtype as D;
    // No weights at all: the message lists what was looked for.
    let dir = Scratch::new("empty");
    let msg = TensorStore::open(&dir.0).unwrap_err().to_string();
    for f in janus::weights::WEIGHT_FILES {
        assert!(msg.contains(f), "{msg}");
    }

    // An index naming a shard that is not there.
    let dir = Scratch::new("missing-shard");
    write_safetensors(
        &dir.path("model-00001-of-00002.safetensors"),
        &[("x", D::F32, vec![1], vec![1.0])],
    );
    std::fs::write(
        dir.path("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    expect_weights_error(
        &dir.0,
        "model.safetensors.index.json",
        "model-00002-of-00002.safetensors",
    );

    // An index that is not JSON.
    std::fs::write(dir.path("model.safetensors.index.json"), "{not json").unwrap();
    expect_weights_error(&dir.0, "model.safetensors.index.json", "invalid JSON");

    // A truncated safetensors file.
    let dir = Scratch::new("truncated-st");
    let path = dir.path("model.safetensors");
    write_safetensors(&path, &[("x", D::F32, vec![64], vec![1.0; 64])]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    expect_weights_error(&dir.0, "model.safetensors", "safetensors");
    // ... cut inside its header.
    std::fs::write(&path, &bytes[..20]).unwrap();
    expect_weights_error(&dir.0, "model.safetensors", "safetensors");

    // Garbage under both names.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let dir = Scratch::new("garbage-st");
    std::fs::write(dir.path("model.safetensors"), &garbage).unwrap();
    expect_weights_error(&dir.0, "model.safetensors", "safetensors");
    let dir = Scratch::new("garbage-pt");
    std::fs::write(dir.path("pytorch_model.bin"), &garbage).unwrap();
    expect_weights_error(&dir.0, "pytorch_model.bin", "PyTorch");
    std::fs::write(dir.path("pytorch_model.bin"), b"").unwrap();
    expect_weights_error(&dir.0, "pytorch_model.bin", "PyTorch");

    // A truncated PyTorch zip.
    let dir = Scratch::new("truncated-pt");
    let bytes = std::fs::read(format!("{DATA}/pth_f32.bin")).unwrap();
    std::fs::write(dir.path("pytorch_model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    expect_weights_error(&dir.0, "pytorch_model.bin", "PyTorch");
}

#[test]
fn model_dir_without_config_is_a_clear_error() {
    let dir = Scratch::new("no-config");
    write_safetensors(
        &dir.path("model.safetensors"),
        &[("x", safetensors::Dtype::F32, vec![1], vec![1.0])],
    );
    let msg = load_model_dir(&dir.0).unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains(&*dir.0.to_string_lossy()),
        "{msg}"
    );
    let msg = load_model_dir(&dir.path("absent")).unwrap_err().to_string();
    assert!(msg.contains("absent"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// The real backend on a tiny transformers-layout file

#[test]
fn backend_maps_converts_and_checks_real_tensors() {
    use safetensors::Dtype as D;
    let dir = Scratch::new("backend");
    let v = "model.vision_model";
    write_safetensors(
        &dir.path("model.safetensors"),
        &[
            (
                &format!("{v}.embeddings.position_embedding.weight"),
                D::BF16,
                vec![4, 2],
                quarters(8),
            ),
            (
                &format!("{v}.encoder.layers.0.self_attn.q_proj.weight"),
                D::BF16,
                vec![2, 2],
                vec![1.0; 4],
            ),
            (
                &format!("{v}.encoder.layers.0.self_attn.k_proj.weight"),
                D::BF16,
                vec![2, 2],
                vec![2.0; 4],
            ),
            (
                &format!("{v}.encoder.layers.0.self_attn.v_proj.weight"),
                D::BF16,
                vec![2, 2],
                vec![3.0; 4],
            ),
            (
                "model.generation_head.vision_head.weight",
                D::F32,
                vec![3, 2],
                quarters(6),
            ),
            (
                "model.vqmodel.quantize.embedding.weight",
                D::F16,
                vec![2, 2],
                quarters(4),
            ),
        ],
    );
    let store = TensorStore::open(&dir.0).unwrap();
    let backend = CheckpointProvider::new(store.clone(), Layout::Transformers);
    let usage = backend.usage();
    let vb = backend.into_var_builder(DType::F32, &Device::Cpu);

    let pos = vb
        .get((1, 4, 2), "vision_model.vision_tower.pos_embed")
        .unwrap();
    assert_eq!((pos.dims(), pos.dtype()), (&[1, 4, 2][..], DType::F32));
    assert_eq!(values(&pos), quarters(8));
    let qkv = vb
        .pp("vision_model.vision_tower.blocks.0.attn.qkv")
        .get((6, 2), "weight")
        .unwrap();
    assert_eq!(values(&qkv), [[1.0; 4], [2.0; 4], [3.0; 4]].concat());
    let head = vb
        .get_with_hints_dtype(
            (3, 2),
            "gen_head.vision_head.weight",
            Default::default(),
            DType::BF16,
        )
        .unwrap();
    assert_eq!(head.dtype(), DType::BF16);
    assert!(vb.contains_tensor("gen_vision_model.quantize.embedding.weight"));
    assert!(!vb.contains_tensor("gen_vision_model.post_quant_conv.weight"));

    let e = vb
        .get((3, 4), "gen_head.vision_head.weight")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "tensor model.generation_head.vision_head.weight has shape [3, 2], expected [3, 4]"
    );
    let e = vb
        .get((1, 5, 2), "vision_model.vision_tower.pos_embed")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "tensor model.vision_model.embeddings.position_embedding.weight has shape [4, 2], expected [5, 2]");
    let e = vb
        .get((9, 2), "vision_model.vision_tower.blocks.0.attn.qkv.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("q_proj.weight has shape [2, 2], expected [3, 2]"),
        "{e}"
    );
    let e = vb
        .get(2, "gen_vision_model.post_quant_conv.bias")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("tensor model.vqmodel.post_quant_conv.bias is missing from the checkpoint ("),
        "{e}"
    );
    assert!(e.contains("model.safetensors"), "{e}");

    let served = usage.served();
    assert!(served.contains("model.vision_model.encoder.layers.0.self_attn.k_proj.weight"));
    assert_eq!(
        usage.unused(store.names()),
        ["model.vqmodel.quantize.embedding.weight"]
    );

    // The same file read through the plain helper, in its own dtype.
    let vb = var_builder(&store, Layout::Transformers, DType::F16, &Device::Cpu);
    let cb = vb
        .get((2, 2), "gen_vision_model.quantize.embedding.weight")
        .unwrap();
    assert_eq!((cb.dtype(), values(&cb)), (DType::F16, quarters(4)));
}

#[test]
fn model_dir_layout_follows_the_tensor_names() {
    use safetensors::Dtype as D;
    let dir = Scratch::new("layout");
    let cfg_file =
        |name: &str| copy_fixture(&format!("configs/{name}.json"), &dir.path("config.json"));
    let weights = |names: &[&str]| {
        let tensors: Vec<_> = names
            .iter()
            .map(|n| (*n, D::F32, vec![1], vec![0.0]))
            .collect();
        write_safetensors(&dir.path("model.safetensors"), &tensors);
    };

    cfg_file("janus-pro-1b.transformers");
    weights(&["model.vqmodel.quant_conv.bias", "lm_head.weight"]);
    let (cfg, store) = load_model_dir(&dir.0).unwrap();
    assert_eq!((cfg.layout, store.len()), (Layout::Transformers, 2));

    // A config of the other layout does not override what the tensors are called.
    cfg_file("janus-pro-1b.original");
    assert_eq!(
        load_model_dir(&dir.0).unwrap().0.layout,
        Layout::Transformers
    );
    weights(&["gen_embed.weight"]);
    assert_eq!(load_model_dir(&dir.0).unwrap().0.layout, Layout::Original);

    // Names from both layouts in one checkpoint.
    weights(&["gen_embed.weight", "model.generation_embeddings.weight"]);
    let msg = load_model_dir(&dir.0).unwrap_err().to_string();
    assert!(
        msg.contains("gen_embed.weight") && msg.contains("model.generation_embeddings.weight"),
        "{msg}"
    );
}
