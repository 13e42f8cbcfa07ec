//! The tokenizers on arbitrary text (bytes read lossily, Unicode from every plane, special
//! tokens and pieces of them), arbitrary ids to decode, and long runs of one character, whose
//! cost must grow about linearly.

use std::time::Duration;

use hearth_core::gguf::Gguf;
use hearth_core::tokenizer::Tokenizer;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{fuzz, thread_cpu_time as cpu_time};

fn tokenizers() -> Vec<(&'static str, Tokenizer)> {
    let dir = hearth_fixtures::fixtures_dir();
    [
        ("llama2", "tokenizers/llama2.gguf.gz"),
        ("llama3", "tokenizers/llama3.gguf.gz"),
        ("qwen3", "tokenizers/qwen3.gguf.gz"),
        ("qwen35", "tokenizers/qwen35.gguf.gz"),
    ]
    .into_iter()
    .map(|(name, p)| {
        let bytes = hearth_fixtures::gunzip(&dir.join(p));
        let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
        (name, Tokenizer::from_gguf(&header).unwrap())
    })
    .collect()
}

/// Text made of pieces that stress tokenizers: every kind of character, special tokens whole
/// and cut, and raw bytes read as UTF-8 (invalid sequences become U+FFFD).
fn random_text(rng: &mut ChaCha8Rng) -> String {
    const PIECES: [&str; 24] = [
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "a",
        "Hello",
        "'s",
        "'LL",
        "123",
        "4567",
        "é",
        "e\u{301}",
        "日本語",
        "🙂",
        "👩\u{200d}💻",
        "\u{0}",
        "\u{fffd}",
        "<s>",
        "</s>",
        "<|im_start|>",
        "<|im_",
        "<|begin_of_text|>",
        "▁",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(0..40) {
        match rng.random_range(0..4) {
            0 => {
                let bytes: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                s.push_str(&String::from_utf8_lossy(&bytes));
            }
            1 => s.extend(
                (0..rng.random_range(1..4))
                    .filter_map(|_| char::from_u32(rng.random_range(0..0x11_0000))),
            ),
            _ => s.push_str(PIECES[rng.random_range(0..PIECES.len())]),
        }
    }
    s
}

#[test]
fn arbitrary_text_and_ids() {
    for (name, tok) in tokenizers() {
        let n = tok.n_vocab() as u32;
        fuzz(
            &format!("tokenizer-{name}"),
            400,
            |rng| {
                let text = random_text(rng);
                // Ids in and out of range, for the decoders.
                let ids: Vec<u32> = (0..rng.random_range(0..24))
                    .map(|_| match rng.random_range(0..8) {
                        0 => rng.random(),
                        _ => rng.random_range(0..n),
                    })
                    .collect();
                // The text's length, the text, then the ids.
                let mut input = (text.len() as u32).to_le_bytes().to_vec();
                input.extend(text.as_bytes());
                input.extend(ids.iter().flat_map(|i| i.to_le_bytes()));
                input
            },
            |input| {
                let len = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
                let text = std::str::from_utf8(&input[4..4 + len]).unwrap();
                let ids: Vec<u32> = input[4 + len..]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                for (special, parse) in [(true, true), (false, false), (false, true)] {
                    let enc = tok.encode_with(text, special, parse);
                    assert!(enc.iter().all(|&id| id < n), "an id past the vocabulary");
                }
                for skip in [false, true] {
                    let whole = tok.decode_with(&ids, skip);
                    // Streaming gives the same text, however the ids split characters.
                    let mut d = tok.stream_decoder(skip);
                    let mut streamed: String = ids.iter().map(|&id| d.push(id)).collect();
                    streamed.push_str(&d.finish());
                    assert_eq!(streamed, whole, "stream and whole decode differ");
                }
            },
        );
    }
}

#[test]
fn long_runs_of_one_character_cost_about_linear_time() {
    let mut failures = Vec::new();
    for (name, tok) in tokenizers() {
        for c in ["a", " ", "\n", "1", "é", "日", "🙂", "!", "\t", "\u{0}"] {
            // `reps` encodings of a run of `n`.
            let time = |n: usize, reps: usize| -> Duration {
                let text = c.repeat(n);
                let start = cpu_time();
                for _ in 0..reps {
                    assert!(!tok.encode(&text, false).is_empty());
                }
                cpu_time() - start
            };
            time(1_000, 1); // warm-up
                            // The same number of characters as ten runs of 10k and as one of 100k: linear
                            // costs the same, quadratic ten times as much. CPU time is counted in scheduler
                            // ticks, so very fast runs pass on their own.
            let (short, long) = (time(10_000, 10), time(100_000, 1));
            let ratio = long.as_secs_f64() / short.as_secs_f64().max(1e-3);
            if ratio > 3.0 && long > Duration::from_millis(30) {
                failures.push(format!(
                    "{name} {c:?}: ten runs of 10k in {short:?}, one of 100k in {long:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
