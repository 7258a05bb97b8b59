use super::*;

#[test]
fn canonical_names_map_to_parts() {
    assert_eq!(
        Part::of_canonical("language_model.lm_head.weight"),
        Part::Llm
    );
    assert_eq!(
        Part::of_canonical("gen_vision_model.quant_conv.weight"),
        Part::VqEncoder
    );
    assert_eq!(
        Part::of_canonical("gen_vision_model.post_quant_conv.bias"),
        Part::VqDecoder
    );
    assert_eq!(
        Part::of_canonical("gen_vision_model.quantize.codebook_used"),
        Part::Ignored
    );
    assert_eq!(
        Part::of_canonical("vision_model.vision_tower.attn_pool.q"),
        Part::Ignored
    );
    assert_eq!(Part::of_canonical("foo.bar"), Part::Unused);
}

/// The published checkpoints' full name lists (`fixtures/checkpoints`, as in
/// tests/checkpoint_names.rs) with their configs (tests/data/configs).
fn published(model: &str, layout: &str) -> ModelInfo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let list = root.join(format!("../../fixtures/checkpoints/{model}.{layout}.tsv"));
    let text = std::fs::read_to_string(&list).unwrap();
    let shapes = weights::parse_shape_list(&text).unwrap();
    let cfg_path = root.join(format!("tests/data/configs/{model}.{layout}.json"));
    let cfg = JanusConfig::from_file(&cfg_path).unwrap();
    let tensors = shapes.into_iter().map(|(n, s)| (n, s, Some(DType::BF16)));
    ModelInfo::from_tensors(&cfg, tensors, "list")
}

#[test]
fn published_checkpoints_count_the_same_in_both_layouts() {
    for model in ["janus-pro-1b", "janus-pro-7b"] {
        let orig = published(model, "original");
        let tf = published(model, "transformers");
        for info in [&orig, &tf] {
            assert!(info.problems.is_empty(), "{model}: {:?}", info.problems);
            assert_eq!(info.part_parameters(Part::Unused), 0, "{model}");
            assert_eq!(
                info.tasks,
                Tasks {
                    understanding: true,
                    generation: true,
                    vq_encode: true
                }
            );
        }
        for part in Part::ALL.into_iter().filter(|p| *p != Part::Ignored) {
            assert_eq!(
                orig.part_parameters(part),
                tf.part_parameters(part),
                "{model}: {part:?}"
            );
        }
        // The original layout also stores attn_pool and codebook_used [16384].
        assert!(orig.part_parameters(Part::Ignored) > 16384);
    }
    let seven = published("janus-pro-7b", "original");
    // embed_tokens + lm_head + 30 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + norm.
    let llm = 2 * 102_400 * 4096 + 30 * (4 * 4096 * 4096 + 3 * 4096 * 11_008 + 2 * 4096) + 4096;
    assert_eq!(seven.part_parameters(Part::Llm), llm);
    // Linear(4096, 4096) + Linear(4096, 16384), with biases.
    assert_eq!(
        seven.part_parameters(Part::GenHead),
        4096 * 4096 + 4096 + 4096 * 16_384 + 16_384
    );
    assert_eq!(seven.part_parameters(Part::GenEmbed), 16_384 * 8);
    assert_eq!(seven.part_parameters(Part::VqCodebook), 16_384 * 8);
    assert_eq!(seven.dtypes.len(), 1);
    assert_eq!(seven.dtypes[0].bytes, 2 * seven.parameters);
}

#[test]
fn lm_head_alone_keeps_generation() {
    let p = |part, tensor: &str| Problem {
        part: Some(part),
        tensor: Some(tensor.into()),
        message: String::new(),
    };
    let t = tasks(&[p(Part::Llm, "language_model.lm_head.weight")]);
    assert!(!t.understanding && t.generation && t.vq_encode);
    let t = tasks(&[p(
        Part::VqEncoder,
        "gen_vision_model.encoder.conv_in.weight",
    )]);
    assert!(t.understanding && t.generation && !t.vq_encode);
    let t = tasks(&[p(
        Part::VqCodebook,
        "gen_vision_model.quantize.embedding.weight",
    )]);
    assert!(t.understanding && !t.generation && !t.vq_encode);
}
