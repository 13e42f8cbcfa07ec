//! Output formats on the GPU: the mask applied in the top-k kernel chooses exactly what
//! masking every logit on the CPU chooses, token for token, under the same seed.

mod common;

use std::sync::Arc;

use hearth_core::constrain::{Format, Grammars};
use hearth_core::gguf::GgufFile;
use hearth_core::model::Products;
use hearth_core::sampling::{GenerateOptions, Generator, SamplingOptions};
use hearth_core::tokenizer::Tokenizer;
use hearth_gpu::{Backend, GpuOptions};
use serde_json::json;

fn run(backend: &mut Backend, mut gen: Generator, prompt: &[u32]) -> (Vec<u32>, String) {
    backend.truncate(0);
    let mut pending = prompt.to_vec();
    let mut text = String::new();
    loop {
        let step = pollster::block_on(backend.step(&pending, &mut gen)).unwrap();
        text.push_str(&step.text);
        if step.finished.is_some() {
            return (gen.generated().to_vec(), text);
        }
        pending = vec![step.token];
    }
}

#[test]
fn constrained_sampling_is_the_same_on_both_backends() {
    let Some(gpu) = common::gpu(&GpuOptions::default()) else {
        return;
    };
    let fixture = hearth_fixtures::model_fixture("qwen3-tiny.q8_0");
    let file = GgufFile::open(fixture.gguf_bytes()).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&file.header).unwrap());
    let grammars = Grammars::new(tok.clone()).unwrap();
    let mut cpu = Backend::load_cpu(&file, 256, &mut |_, _| {}).unwrap();
    // The GPU's products are checked against the CPU's reference ones.
    if let Backend::Cpu { model, .. } = &mut cpu {
        model.set_products(Products::Reference);
    }
    let mut gpu = pollster::block_on(Backend::load_gpu(gpu, &file, 256, &mut |_, _| {})).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 10},
            "rooms": {"type": "integer", "minimum": 1, "maximum": 9},
            "kind": {"enum": ["flat", "house"]},
        },
        "required": ["city", "rooms", "kind"],
        "additionalProperties": false,
    });
    let format = Format::JsonSchema {
        schema,
        strict: true,
    };
    let prompt = tok.encode("A listing as JSON:", true);
    // Greedy (the GPU's argmax turns into a masked top list), a top-k draw (the top list
    // decides), and a draw from every logit (read back, masked on the CPU).
    let samplings = [
        SamplingOptions::default(),
        SamplingOptions {
            temperature: 1.0,
            top_k: 40,
            seed: 7,
            ..Default::default()
        },
        SamplingOptions {
            temperature: 0.8,
            seed: 11,
            ..Default::default()
        },
    ];
    for sampling in samplings {
        let outputs: Vec<(Vec<u32>, String)> = [&mut cpu, &mut gpu]
            .into_iter()
            .map(|backend| {
                let opts = GenerateOptions {
                    sampling: sampling.clone(),
                    max_tokens: 80,
                    ..Default::default()
                };
                let mut gen = Generator::new(tok.clone(), opts, &prompt).unwrap();
                gen.constrain(grammars.compile(&format).unwrap());
                run(backend, gen, &prompt)
            })
            .collect();
        assert_eq!(outputs[0], outputs[1], "{sampling:?}");
        let value: serde_json::Value = serde_json::from_str(&outputs[0].1)
            .unwrap_or_else(|e| panic!("{:?} is not JSON: {e}", outputs[0].1));
        assert!(value["rooms"]
            .as_u64()
            .is_some_and(|r| (1..=9).contains(&r)));
    }
}
