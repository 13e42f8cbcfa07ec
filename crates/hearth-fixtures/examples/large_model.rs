//! Writes a generated model (see `hearth_fixtures::large_model`) for benchmarks:
//! `cargo run --release -p hearth-fixtures --example large_model -- [--shape NAME]
//! [--layers N] [--seed S] OUT.gguf`, NAME one of qwen2-1024 (the default), qwen35-0.8b,
//! qwen3-0.6b, qwen3-100m and llama3.2-1b; the full model's layers unless `--layers` says fewer.

use std::process::exit;

use hearth_fixtures::large_model::{self, Shape};

fn usage(problem: &str) -> ! {
    let shapes: Vec<_> = Shape::ALL.iter().map(|s| s.name()).collect();
    eprintln!("{problem}\nusage: large_model [--shape NAME] [--layers N] [--seed S] OUT.gguf");
    eprintln!("shapes: {}", shapes.join(", "));
    exit(2);
}

fn main() -> std::io::Result<()> {
    let (mut shape, mut layers, mut seed, mut out) = (Shape::Qwen2, None, 1, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |flag: &str, v: String| {
            v.parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag} takes a number, not {v:?}")))
        };
        match arg.as_str() {
            "--shape" => {
                let v = value("--shape");
                shape = Shape::from_name(&v)
                    .unwrap_or_else(|| usage(&format!("no shape called {v:?}")));
            }
            "--layers" => layers = Some(number("--layers", value("--layers")) as usize),
            "--seed" => seed = number("--seed", value("--seed")),
            flag if flag.starts_with("--") => usage(&format!("unknown option {flag}")),
            path if out.is_none() => out = Some(std::path::PathBuf::from(path)),
            extra => usage(&format!("unexpected argument {extra:?}")),
        }
    }
    let out = out.unwrap_or_else(|| usage("no output file"));

    let source = shape.tokenizer_source();
    let spec = shape.spec(
        layers.unwrap_or(shape.layers()),
        large_model::n_vocab(&source)?,
    );
    let params: u64 = spec
        .expected_tensors()
        .iter()
        .map(|(_, dims)| dims.iter().product::<u64>())
        .sum();
    let started = std::time::Instant::now();
    large_model::write(&out, &spec, &source, seed)?;
    let bytes = std::fs::metadata(&out)?.len();
    eprintln!(
        "wrote {} ({}, {} layers, {:.1}M parameters, {:.1} MB) in {:.1} s",
        out.display(),
        shape.name(),
        spec.n_layer(),
        params as f64 / 1e6,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
