//! The generated models at full size, from their headers alone (drawing their weights takes
//! minutes): each header describes exactly the spec it was written from, with the real
//! models' dimensions and llama.cpp's Q4_K_M types.

use hearth_core::gguf::Gguf;
use hearth_core::model::{ModelSpec, Role, TensorId};
use hearth_core::quant::GgmlType;
use hearth_fixtures::large_model::{self, Shape};

fn full(shape: Shape) -> (ModelSpec, Gguf) {
    let source = shape.tokenizer_source();
    let spec = shape.spec(shape.layers(), large_model::n_vocab(&source).unwrap());
    let header = large_model::header(&spec, &source).unwrap();
    (spec, header)
}

fn ty(header: &Gguf, layer: Option<usize>, role: Role) -> GgmlType {
    let id = TensorId { role, layer };
    header.tensor(&id.name()).expect("tensor").ty
}

fn parameters(spec: &ModelSpec) -> u64 {
    spec.expected_tensors()
        .iter()
        .map(|(_, dims)| dims.iter().product::<u64>())
        .sum()
}

#[test]
fn headers_give_back_their_specs() {
    for shape in Shape::ALL {
        let source = shape.tokenizer_source();
        let (spec, header) = full(shape);
        assert_eq!(
            ModelSpec::from_gguf(&header).unwrap(),
            spec,
            "{}",
            shape.name()
        );
        spec.check_tensors(&header).unwrap();
        assert_eq!(header.tensors().len(), spec.expected_tensors().len());
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.pre",
        ] {
            assert_eq!(header.get(key), source.get(key), "{} {key}", shape.name());
        }
    }
}

#[test]
fn qwen35_shape_is_qwen35_0_8b() {
    let (spec, header) = full(Shape::Qwen35_0_8B);
    assert_eq!(
        (spec.n_vocab, spec.n_embd, spec.n_layer()),
        (248320, 1024, 24)
    );
    assert!(spec.tied_output());
    let kinds: Vec<bool> = spec
        .layers
        .iter()
        .map(|l| l.attention().is_some())
        .collect();
    assert_eq!(kinds.iter().filter(|&&a| a).count(), 6);
    assert!(kinds[3] && kinds[23] && !kinds[0] && !kinds[22]);
    let a = spec.attention_layers().next().unwrap();
    assert_eq!(
        (a.n_head, a.n_head_kv, a.head_dim, a.rope.map(|r| r.dim)),
        (8, 2, 256, Some(64))
    );
    assert!(a.output_gate && a.qk_norm && !a.qkv_bias);
    let d = spec.delta_net_layers().next().unwrap();
    assert_eq!(
        (
            d.n_k_heads,
            d.n_v_heads,
            d.head_k_dim,
            d.head_v_dim,
            d.conv_kernel
        ),
        (16, 16, 128, 128, 4)
    );
    // The text trunk of Qwen3.5-0.8B: 0.75B parameters, a third of them the embedding.
    let p = parameters(&spec);
    assert!((740_000_000..760_000_000).contains(&p), "{p} parameters");
    assert_eq!(
        header
            .get("qwen35.rope.dimension_sections")
            .and_then(|v| v.as_array().and_then(|a| a.to_i64s())),
        Some(vec![11, 11, 10, 0])
    );

    assert_eq!(ty(&header, None, Role::TokenEmbd), GgmlType::Q6_K);
    for (layer, role, want) in [
        (0, Role::AttnQkv, GgmlType::Q4_K),
        (0, Role::SsmBeta, GgmlType::Q4_K),
        (0, Role::SsmA, GgmlType::F32),
        (0, Role::SsmConv1d, GgmlType::F32),
        (0, Role::SsmDt, GgmlType::F32),
        // llama.cpp's extra bits: the first and last eighth, and every third layer between.
        (0, Role::FfnDown, GgmlType::Q6_K),
        (4, Role::FfnDown, GgmlType::Q4_K),
        (5, Role::FfnDown, GgmlType::Q6_K),
        (3, Role::AttnQ, GgmlType::Q4_K),
        (23, Role::AttnV, GgmlType::Q6_K),
    ] {
        assert_eq!(ty(&header, Some(layer), role), want, "blk.{layer} {role:?}");
    }
}

#[test]
fn qwen3_shape_is_qwen3_0_6b() {
    let (spec, header) = full(Shape::Qwen3_0_6B);
    assert_eq!(
        (spec.n_vocab, spec.n_embd, spec.n_layer()),
        (151936, 1024, 28)
    );
    assert!(spec.tied_output() && !spec.is_recurrent());
    let a = spec.attention_layers().next().unwrap();
    assert_eq!(
        (a.n_head, a.n_head_kv, a.head_dim, a.rope.map(|r| r.dim)),
        (16, 8, 128, Some(128))
    );
    assert!(a.qk_norm && !a.qkv_bias && !a.output_gate);
    // Qwen3-0.6B: 0.6B parameters, 0.44B without the embedding.
    let p = parameters(&spec);
    assert!((590_000_000..610_000_000).contains(&p), "{p} parameters");
    assert_eq!(ty(&header, None, Role::TokenEmbd), GgmlType::Q6_K);
    assert_eq!(ty(&header, Some(10), Role::FfnUp), GgmlType::Q4_K);
}

#[test]
fn benchmark_shapes_have_their_sizes() {
    // The peer benchmark's ~100M Qwen3: 103M parameters, 78M of them the tied embedding.
    let (spec, header) = full(Shape::Qwen3_100M);
    assert_eq!(
        (spec.n_vocab, spec.n_embd, spec.n_layer()),
        (151936, 512, 8)
    );
    assert!(spec.tied_output());
    assert_eq!(parameters(&spec), 102_967_808);
    assert_eq!(ty(&header, None, Role::TokenEmbd), GgmlType::Q6_K);

    // Llama-3.2-1B: its 1,235,814,400 parameters (the rope factors aside).
    let (spec, header) = full(Shape::Llama32_1B);
    assert_eq!(
        (spec.n_vocab, spec.n_embd, spec.n_layer()),
        (128256, 2048, 16)
    );
    assert!(spec.tied_output());
    let a = spec.attention_layers().next().unwrap();
    assert_eq!(
        (a.n_head, a.n_head_kv, a.head_dim, a.rope.map(|r| r.base)),
        (32, 8, 64, Some(5e5))
    );
    assert_eq!(parameters(&spec), 1_235_814_400);
    assert_eq!(
        header.get("tokenizer.ggml.pre").and_then(|v| v.as_str()),
        Some("llama-bpe")
    );
}
