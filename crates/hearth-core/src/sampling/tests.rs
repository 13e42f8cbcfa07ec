use super::*;
use std::sync::Arc;

use crate::tokenizer::Tokenizer;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn sampler(f: impl FnOnce(&mut SamplingOptions)) -> Sampler {
    let mut o = SamplingOptions::default();
    f(&mut o);
    Sampler::new(o).unwrap()
}

fn draws(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n).map(|_| s.sample(logits).unwrap()).collect()
}

const LOGITS: [f32; 6] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9];

/// The `n` best (id, logit) entries, best first, ties to the lower id: what a GPU returns.
fn best(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// Logits with many ties and some banned tokens.
fn rough_logits(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if i % 37 == 5 {
                f32::NEG_INFINITY
            } else {
                (rng.next_u64() % 64) as f32 / 8.0
            }
        })
        .collect()
}

#[test]
fn the_best_tokens_give_the_same_draws_as_every_logit() {
    let logits = rough_logits(3000, 1);
    let recent: Vec<u32> = best(&logits, 64)
        .iter()
        .step_by(3)
        .map(|&(id, _)| id)
        .collect();
    let cases: [fn(&mut SamplingOptions); 5] = [
        |o| (o.temperature, o.top_k) = (0.8, 40),
        |o| (o.temperature, o.top_k, o.top_p, o.min_p) = (1.3, 20, 0.9, 0.05),
        |o| {
            (
                o.temperature,
                o.top_k,
                o.repeat_penalty,
                o.frequency_penalty,
            ) = (1.0, 30, 1.3, 0.5)
        },
        |o| {
            (o.temperature, o.top_k, o.logit_bias) =
                (0.7, 10, vec![(7, -2.0), (9, f32::NEG_INFINITY)])
        },
        |o| (o.temperature, o.repeat_penalty, o.presence_penalty) = (0.0, 1.5, 1.0),
    ];
    for (c, set) in cases.iter().enumerate() {
        let mut covered = 0;
        for seed in 0..40 {
            let make = || {
                let mut s = sampler(|o| {
                    o.seed = seed;
                    set(o);
                });
                recent.iter().for_each(|&t| s.accept(t));
                s
            };
            let (mut full, mut top) = (make(), make());
            assert!(matches!(top.wants(), Want::Top { .. }), "case {c}");
            for step in 0..5 {
                let want = full.sample(&logits).unwrap();
                let Some(got) = top.sample_top(&best(&logits, 64), logits.len()).unwrap() else {
                    break;
                };
                assert_eq!(got, want, "case {c}, seed {seed}, step {step}");
                covered += 1;
                full.accept(want);
                top.accept(got);
            }
        }
        assert!(
            covered >= 150,
            "case {c}: the list sufficed only {covered} times of 200"
        );
    }
}

#[test]
fn a_list_too_short_for_the_options_is_refused_without_a_draw() {
    let logits = rough_logits(3000, 2);
    let top = best(&logits, 64);
    let need_all = [
        sampler(|o| o.temperature = 1.0),
        sampler(|o| (o.temperature, o.top_k, o.logit_bias) = (1.0, 10, vec![(3, 0.5)])),
        sampler(|o| (o.temperature, o.top_k, o.repeat_penalty) = (1.0, 10, 0.8)),
    ];
    for s in &need_all {
        assert_eq!(s.wants(), Want::All);
    }
    assert_eq!(sampler(|_| {}).wants(), Want::Argmax);
    // Asks for more than the list holds.
    assert_eq!(
        sampler(|o| (o.temperature, o.top_k) = (1.0, 65))
            .sample_top(&top, 3000)
            .unwrap(),
        None
    );
    // Penalties push most of the list below its last entry.
    let mut s =
        sampler(|o| (o.temperature, o.top_k, o.frequency_penalty, o.seed) = (1.0, 40, 100.0, 5));
    top.iter().take(60).for_each(|&(id, _)| s.accept(id));
    assert_eq!(s.sample_top(&top, 3000).unwrap(), None);
    // Nothing was drawn: the first draw from every logit is the one a fresh sampler makes.
    let mut fresh =
        sampler(|o| (o.temperature, o.top_k, o.frequency_penalty, o.seed) = (1.0, 40, 100.0, 5));
    top.iter().take(60).for_each(|&(id, _)| fresh.accept(id));
    assert_eq!(s.sample(&logits).unwrap(), fresh.sample(&logits).unwrap());
}

#[test]
fn greedy_takes_the_argmax_and_ties_go_to_the_lowest_id() {
    assert_eq!(sampler(|_| {}).sample(&LOGITS).unwrap(), 1);
    assert_eq!(sampler(|_| {}).sample(&[0.5, 2.0, 2.0]).unwrap(), 1);
}

#[test]
fn top_k_1_equals_greedy_at_any_temperature() {
    let mut s = sampler(|o| {
        o.temperature = 5.0;
        o.top_k = 1;
        o.seed = 7;
    });
    assert!(draws(&mut s, &LOGITS, 200).iter().all(|&t| t == 1));
}

#[test]
fn top_k_keeps_exactly_the_k_best() {
    let mut s = sampler(|o| {
        o.temperature = 10.0;
        o.top_k = 3;
    });
    let seen: std::collections::BTreeSet<u32> = draws(&mut s, &LOGITS, 2000).into_iter().collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2, 5]);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05: p = 0.79 needs the first two, p = 0.81 three.
    let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    for (p, want) in [
        (0.79, vec![0, 1]),
        (0.81, vec![0, 1, 2]),
        (0.1, vec![0]),
        (1.0, vec![0, 1, 2, 3]),
    ] {
        let mut s = sampler(|o| {
            o.temperature = 1.0;
            o.top_p = p;
        });
        let seen: std::collections::BTreeSet<u32> =
            draws(&mut s, &logits, 3000).into_iter().collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "top_p {p}");
    }
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    // The floor is min_p * 0.5: 0.145 keeps 0.15, 0.155 does not.
    for (min_p, want) in [(0.29, vec![0, 1, 2]), (0.31, vec![0, 1]), (1.0, vec![0])] {
        let mut s = sampler(|o| {
            o.temperature = 1.0;
            o.min_p = min_p;
        });
        let seen: std::collections::BTreeSet<u32> =
            draws(&mut s, &logits, 3000).into_iter().collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "min_p {min_p}");
    }
}

#[test]
fn temperature_sharpens_and_flattens() {
    let share = |t: f32| {
        let mut s = sampler(|o| o.temperature = t);
        draws(&mut s, &LOGITS, 4000)
            .iter()
            .filter(|&&x| x == 1)
            .count()
    };
    let (cold, warm, hot) = (share(0.1), share(1.0), share(100.0));
    assert!(cold > warm && warm > hot, "{cold} {warm} {hot}");
    // At a very high temperature all six are about equally likely.
    assert!((500..900).contains(&hot), "{hot}");
}

#[test]
fn sampling_matches_the_softmax() {
    let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
    let mut s = sampler(|o| o.temperature = 1.0);
    let n = 20_000;
    let d = draws(&mut s, &logits, n);
    for (id, p) in [(0, 0.6), (1, 0.3), (2, 0.1)] {
        let got = d.iter().filter(|&&x| x == id).count() as f64 / n as f64;
        assert!((got - p).abs() < 0.015, "token {id}: {got} vs {p}");
    }
}

#[test]
fn a_seed_reproduces_the_sequence() {
    let run = |seed| {
        let mut s = sampler(|o| {
            o.temperature = 1.5;
            o.seed = seed;
        });
        draws(&mut s, &LOGITS, 50)
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn penalties_lower_recent_tokens() {
    let mut s = sampler(|o| o.repeat_penalty = 2.0);
    s.accept(1);
    // 3.0 / 2 = 1.5 falls below 2.9 and 2.5.
    assert_eq!(s.sample(&LOGITS).unwrap(), 5);
    s.accept(5);
    assert_eq!(s.sample(&LOGITS).unwrap(), 2);
    // A negative logit is multiplied, so it drops further.
    let mut s = sampler(|o| o.repeat_penalty = 2.0);
    s.accept(0);
    let mut l = vec![-1.0, -1.5];
    assert_eq!(s.sample(&l).unwrap(), 1);
    l[1] = -2.5;
    assert_eq!(s.sample(&l).unwrap(), 0);

    let mut s = sampler(|o| o.frequency_penalty = 0.1);
    for _ in 0..3 {
        s.accept(1);
    }
    // 3.0 - 3 * 0.1 = 2.7 < 2.9.
    assert_eq!(s.sample(&LOGITS).unwrap(), 5);
    let mut s = sampler(|o| o.presence_penalty = 0.05);
    for _ in 0..3 {
        s.accept(1);
    }
    // 3.0 - 0.05 = 2.95 > 2.9: presence does not grow with the count.
    assert_eq!(s.sample(&LOGITS).unwrap(), 1);
}

#[test]
fn penalties_only_see_the_last_n_tokens() {
    let mut s = sampler(|o| {
        o.repeat_penalty = 2.0;
        o.penalty_last_n = 2;
    });
    s.accept(1);
    s.accept(3);
    s.accept(4);
    assert_eq!(s.sample(&LOGITS).unwrap(), 1);
}

#[test]
fn logit_bias_adds_and_bans() {
    let mut s = sampler(|o| o.logit_bias = vec![(1, f32::NEG_INFINITY), (3, 10.0)]);
    assert_eq!(s.sample(&LOGITS).unwrap(), 3);
    let mut s = sampler(|o| {
        o.temperature = 1.0;
        o.logit_bias = vec![(1, f32::NEG_INFINITY)];
    });
    assert!(!draws(&mut s, &LOGITS, 500).contains(&1));
    let mut s = sampler(|o| o.logit_bias = vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]);
    assert_eq!(s.sample(&[0.0, 1.0]), Err(SamplingError::NothingToSample));
    let mut s = sampler(|o| o.logit_bias = vec![(9, 1.0)]);
    assert_eq!(
        s.sample(&LOGITS),
        Err(SamplingError::LogitBiasOutOfRange { id: 9, n_vocab: 6 })
    );
}

#[test]
fn invalid_options_are_rejected_with_a_clear_error() {
    type Mutate = fn(&mut SamplingOptions);
    let bad: Vec<(Mutate, &str)> = vec![
        (|o| o.temperature = -0.1, "temperature"),
        (|o| o.temperature = f32::NAN, "temperature"),
        (|o| o.temperature = f32::INFINITY, "temperature"),
        (|o| o.top_p = 0.0, "top_p"),
        (|o| o.top_p = 1.5, "top_p"),
        (|o| o.min_p = -0.5, "min_p"),
        (|o| o.min_p = 2.0, "min_p"),
        (|o| o.repeat_penalty = 0.0, "repeat_penalty"),
        (|o| o.frequency_penalty = f32::NAN, "frequency_penalty"),
        (|o| o.presence_penalty = f32::INFINITY, "presence_penalty"),
        (|o| o.logit_bias = vec![(0, f32::INFINITY)], "logit bias"),
    ];
    for (f, name) in bad {
        let mut o = SamplingOptions::default();
        f(&mut o);
        let err = Sampler::new(o).err().expect("rejected");
        assert!(err.to_string().contains(name), "{err}");
    }
    assert_eq!(sampler(|_| {}).sample(&[]), Err(SamplingError::EmptyLogits));
    assert_eq!(
        sampler(|_| {}).sample(&[0.0, f32::NAN]),
        Err(SamplingError::NanLogit(1))
    );
    assert_eq!(
        StopMatcher::new(vec![String::new()]).err(),
        Some(SamplingError::EmptyStop)
    );
}

#[test]
fn stop_strings_match_across_pieces_and_are_never_emitted() {
    let mut m = StopMatcher::new(vec!["</end>".into(), "STOP".into()]).unwrap();
    assert_eq!(m.push("hello </"), ("hello ".into(), false));
    assert_eq!(m.push("en"), (String::new(), false));
    // Not a stop after all: the held text comes out.
    assert_eq!(m.push("try"), ("</entry".into(), false));
    assert_eq!(m.push(" ST"), (" ".into(), false));
    assert_eq!(m.push("OP and more"), (String::new(), true));

    let mut m = StopMatcher::new(vec!["ab".into()]).unwrap();
    assert_eq!(m.push("xa"), ("x".into(), false));
    assert_eq!(m.flush(), "a");
    // Multi-byte text is held back by whole characters.
    let mut m = StopMatcher::new(vec!["日本語".into()]).unwrap();
    assert_eq!(m.push("に日本"), ("に".into(), false));
    assert_eq!(m.push("人"), ("日本人".into(), false));

    // Overlapping starts: "aab" held after "aaa" is the start "aa", not "a".
    let mut m = StopMatcher::new(vec!["aab".into()]).unwrap();
    assert_eq!(m.push("xaaa"), ("xa".into(), false));
    assert_eq!(m.push("b!"), (String::new(), true));
}

/// What is held back is the longest end of the text that starts a stop string, as a direct
/// search over every length finds it; a stop string of 200 kB still costs little per push.
#[test]
fn stop_strings_hold_back_exactly_the_longest_start_in_linear_time() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..2000 {
        let word = |rng: &mut rand_chacha::ChaCha8Rng, n| -> String {
            (0..n)
                .map(|_| ['a', 'b', 'é'][rng.random_range(0..3)])
                .collect()
        };
        let (stop_len, text_len) = (rng.random_range(1..8), rng.random_range(0..12));
        let stop = word(&mut rng, stop_len);
        let text = word(&mut rng, text_len);
        let mut m = StopMatcher::new(vec![stop.clone()]).unwrap();
        let (shown, found) = m.push(&text);
        if let Some(at) = text.find(&stop) {
            assert_eq!((shown.as_str(), found), (&text[..at], true));
            continue;
        }
        let held = m.flush();
        let longest = (1..stop.len())
            .filter(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
            .max()
            .unwrap_or(0);
        assert_eq!(
            (held.len(), found),
            (longest, false),
            "{stop:?} in {text:?}"
        );
        assert_eq!(shown + &held, text);
    }
    let long = "ab".repeat(100_000);
    let mut m = StopMatcher::new(vec![long.clone() + "c"]).unwrap();
    let start = std::time::Instant::now();
    assert_eq!(m.push(&long), (String::new(), false));
    for _ in 0..20 {
        assert_eq!(m.push("ab"), ("ab".into(), false));
    }
    assert_eq!(m.push("c!"), (String::new(), true));
    // Quadratic hold-back took minutes here; linear takes milliseconds.
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

/// Mistral's SentencePiece vocabulary from the tokenizer fixtures.
fn llama2() -> Arc<Tokenizer> {
    use std::io::Read;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tokenizers/llama2.gguf.gz"
    );
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let header = crate::gguf::Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    Arc::new(Tokenizer::from_gguf(&header).unwrap())
}

/// Runs a generator on logits that make greedy choose `script`, one token per step.
fn run(
    tok: &Arc<Tokenizer>,
    opts: GenerateOptions,
    script: &[u32],
) -> (String, Vec<u32>, Option<FinishReason>) {
    let mut g = Generator::new(tok.clone(), opts, &[1]).unwrap();
    let mut text = String::new();
    for &want in script {
        let mut logits = vec![0.0; tok.n_vocab()];
        logits[want as usize] = 10.0;
        let step = g.step(&logits).unwrap();
        assert_eq!(step.token, want);
        text.push_str(&step.text);
        if step.finished.is_some() {
            assert_eq!(g.step(&logits), Err(SamplingError::Finished));
            break;
        }
    }
    (text, g.generated().to_vec(), g.finished())
}

#[test]
fn generation_stops_at_eos_without_showing_it() {
    let tok = llama2();
    let mut script = tok.encode("Hello world", false);
    script.push(2);
    script.extend(tok.encode("never", false));
    let (text, ids, finish) = run(&tok, GenerateOptions::default(), &script);
    assert_eq!(text, "Hello world");
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(finish, Some(FinishReason::EndOfGeneration));

    // With ignore_eos the token is generated and, being a control token, not shown.
    let opts = GenerateOptions {
        ignore_eos: true,
        max_tokens: script.len(),
        ..Default::default()
    };
    let (text, ids, finish) = run(&tok, opts, &script);
    assert_eq!(
        (text.as_str(), ids.len(), finish),
        (
            "Hello world never",
            script.len(),
            Some(FinishReason::MaxTokens)
        )
    );
}

#[test]
fn stop_strings_end_generation_across_token_boundaries() {
    let tok = llama2();
    let script = tok.encode("The answer is 42.\nQuestion: more", false);
    let opts = GenerateOptions {
        stop: vec!["\nQuest".into()],
        ..Default::default()
    };
    let (text, ids, finish) = run(&tok, opts, &script);
    assert_eq!(text, "The answer is 42.");
    assert_eq!(finish, Some(FinishReason::StopString));
    assert!(ids.len() < script.len());
}

#[test]
fn max_tokens_bounds_the_generation_and_flushes_held_text() {
    let tok = llama2();
    let script = tok.encode("one two three four", false);
    let opts = GenerateOptions {
        max_tokens: 2,
        stop: vec!["twoX".into()],
        ..Default::default()
    };
    let (text, ids, finish) = run(&tok, opts, &script);
    assert_eq!(
        (text.as_str(), ids.len(), finish),
        ("one two", 2, Some(FinishReason::MaxTokens))
    );
    let zero = GenerateOptions {
        max_tokens: 0,
        ..Default::default()
    };
    assert_eq!(
        Generator::new(tok, zero, &[]).err(),
        Some(SamplingError::MaxTokens)
    );
}
