//! Fuzzing on stable Rust, run by `cargo test`: structured mutations of the committed fixture
//! files, and arbitrary bytes, through the GGUF reader, the tokenizers, the chat templates and
//! the output formats.
//!
//! Each target tries a fixed number of inputs from a fixed seed, a few seconds in all. For a
//! longer run, `HEARTH_FUZZ_SCALE=100` tries a hundred times as many, and `HEARTH_FUZZ_SEED=N`
//! other inputs (see the README). A failing input is reported with its seed and number, and
//! written to `target/fuzz-failures/` so that it can become a regression test.

mod chat;
#[path = "../common/mod.rs"]
mod common;
mod formats;
mod gguf;
mod tokenizer;

use common::{process_cpu_time, thread_cpu_time};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How many times the default number of inputs to try (`HEARTH_FUZZ_SCALE`).
fn scale() -> usize {
    std::env::var("HEARTH_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The seed of `target`'s inputs: fixed unless `HEARTH_FUZZ_SEED` is set.
fn seed(target: &str) -> u64 {
    let base: u64 = std::env::var("HEARTH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    target.bytes().fold(base ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `count` (times the scale) inputs of `target`: `make` builds input `i` from the
/// target's random stream, `check` runs it and panics on a failure. Every failure is collected
/// and reported at the end, with its input saved.
fn fuzz<I: AsRef<[u8]>>(
    target: &str,
    count: usize,
    mut make: impl FnMut(&mut ChaCha8Rng) -> I,
    mut check: impl FnMut(&I),
) {
    let seed = seed(target);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = count * scale();
    let mut failures = Vec::new();
    for i in 0..n {
        let input = make(&mut rng);
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = save(target, seed, i, input.as_ref());
            failures.push(format!("input {i} ({}): {msg}", path.display()));
        }
    }
    eprintln!(
        "fuzz {target}: {n} inputs, seed {seed}, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{target}:\n{}", failures.join("\n"));
}

fn save(target: &str, seed: u64, i: usize, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{seed}-{i}"));
    let _ = std::fs::write(&path, bytes);
    path
}
