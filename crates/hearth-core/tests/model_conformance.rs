//! Every committed model fixture against its PyTorch reference: last-position logits within
//! 1e-4 of the logit range, equal top-1, and 32 greedy tokens equal to PyTorch's wherever the
//! reference's top-2 gap is wider than that tolerance.

use hearth_core::gguf::GgufFile;
use hearth_core::model::CpuModel;
use hearth_fixtures::{argmax, floats, ids, max_abs_diff, model_fixtures};

/// Allowed difference, as a fraction of the reference logits' range.
const TOLERANCE: f32 = 1e-4;

#[test]
fn every_fixture_matches_pytorch() {
    let fixtures = model_fixtures();
    assert!(
        fixtures.len() >= 12,
        "expected the full fixture set, found {}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        let label = f.label();
        let file = GgufFile::open(f.gguf_bytes()).unwrap();
        let model =
            CpuModel::load(&file, &mut |_, _| {}).unwrap_or_else(|e| panic!("{label}: {e}"));
        let reference: serde_json::Value = f.reference();
        for (s, seq) in reference["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let tokens = ids(&seq["tokens"]);
            let want = floats(&seq["last_logits"]);
            let mut cache = model.new_state(tokens.len() + 32);
            let got = model.forward(&mut cache, &tokens).unwrap();
            assert_eq!(got.len(), want.len(), "{label}: vocabulary size");

            let range = want.iter().fold(f32::MIN, |a, &b| a.max(b))
                - want.iter().fold(f32::MAX, |a, &b| a.min(b));
            let tol = TOLERANCE * range;
            let worst = max_abs_diff(&got, &want);
            eprintln!("{label} seq {s}: max diff {worst:.3e} (tolerance {tol:.3e})");
            if worst > tol {
                failures.push(format!("{label} seq {s}: max |diff| {worst} > {tol}"));
            }
            if argmax(&got) != argmax(&want) {
                failures.push(format!(
                    "{label} seq {s}: top-1 {} != {}",
                    argmax(&got),
                    argmax(&want)
                ));
            }

            // Greedy continuation, compared until the first token the reference calls a near-tie.
            let greedy = ids(&seq["greedy"]);
            let gaps = floats(&seq["greedy_gaps"]);
            let mut logits = got;
            for (step, (&want_id, &gap)) in greedy.iter().zip(&gaps).enumerate() {
                let id = argmax(&logits) as u32;
                if id != want_id {
                    if gap > tol {
                        failures.push(format!(
                            "{label} seq {s}: greedy step {step}: {id} != {want_id} (gap {gap})"
                        ));
                    }
                    break;
                }
                logits = model.forward(&mut cache, &[id]).unwrap();
            }
        }
        eprintln!("{label}: ok");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A prompt run at once and the same prompt run a token at a time give the same logits at
/// every position.
#[test]
fn prompt_and_decode_paths_agree() {
    for f in model_fixtures().iter().filter(|f| f.ty == "f32") {
        let file = GgufFile::open(f.gguf_bytes()).unwrap();
        let model = CpuModel::load(&file, &mut |_, _| {}).unwrap();
        let tokens = [1u32, 17, 300, 42, 7, 99];
        let mut cache = model.new_state(16);
        let all = model.forward_all(&mut cache, &tokens).unwrap();
        let mut cache = model.new_state(16);
        let n_vocab = model.spec.n_vocab;
        for (t, &id) in tokens.iter().enumerate() {
            let step = model.forward(&mut cache, &[id]).unwrap();
            let batch = &all[t * n_vocab..(t + 1) * n_vocab];
            let worst = max_abs_diff(&step, batch);
            assert!(worst < 1e-4, "{}: position {t} differs by {worst}", f.name);
        }
        // A truncated state continues exactly as a fresh one; recurrent state, which has no
        // snapshot here, starts again from the beginning.
        let kept = cache.truncate(3);
        assert_eq!(kept, if model.spec.is_recurrent() { 0 } else { 3 });
        let again = model.forward(&mut cache, &tokens[kept..]).unwrap();
        let fresh = &all[(tokens.len() - 1) * n_vocab..];
        let worst = max_abs_diff(&again, fresh);
        assert!(
            worst < 1e-4,
            "{}: after truncate differs by {worst}",
            f.name
        );
    }
}
