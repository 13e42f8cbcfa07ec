//! `hearth bench`: prefill and decode speed on the GPU (after an untimed warm-up, the mean of
//! `--reps` timed repetitions, each a prefill from an empty cache then a decode after the
//! prompt, as llama.cpp's llama-bench times them), decode's achieved weight bandwidth
//! against a plain copy kernel measured on the same device in the same run, the memory held by
//! the KV cache and by recurrent state, and the share of decode and prefill time the recurrence
//! takes (its launches timed alone, as many times as tokens were decoded and as many whole
//! chunks as the prompt held). With `--json-schema`, decode
//! again with the output held to the schema (greedy within its mask) and give the cost of the
//! mask per token against plain greedy decode. With `--backend cpu`, prefill and decode speed
//! on the CPU with its fast products and with its reference products, and their ratio.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use hearth_core::constrain::{Format, Grammars};
use hearth_core::model::{CpuModel, Products};
use hearth_core::sampling::{GenerateOptions, Generator};
use hearth_gpu::bench::CopyKernel;
use hearth_gpu::{Backend, Gpu, GpuModel, GpuOptions, CHUNK};

use crate::load;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Where to run: the GPU engine, or the CPU (fast products against the reference ones).
    #[arg(long, value_enum, default_value_t = Where::Gpu)]
    backend: Where,
    /// Tokens in the prompt.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt, greedily.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Timed repetitions (each after the untimed warm-up); rates are their mean.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// CPU threads for the products (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Use only the plainest kernels (no shader-f16, no subgroups).
    #[arg(long)]
    plain: bool,
    /// Keep the KV cache in f16 where the device has shader-f16.
    #[arg(long)]
    f16_kv: bool,
    /// Also decode held to the JSON schema in FILE, and compare.
    #[arg(long, value_name = "FILE")]
    json_schema: Option<PathBuf>,
}

/// The timed repetitions of one phase: the mean and sample standard deviation of their
/// tokens/s (as llama-bench reports them) and their mean time.
struct Stats {
    each_s: Vec<f64>,
    mean_s: f64,
    mean_tps: f64,
    stddev_tps: f64,
}

impl Stats {
    fn new(tokens: usize, seconds: impl Iterator<Item = f64>) -> Self {
        let each_s: Vec<f64> = seconds.collect();
        let n = each_s.len() as f64;
        let tps: Vec<f64> = each_s.iter().map(|s| tokens as f64 / s).collect();
        let mean_tps = tps.iter().sum::<f64>() / n;
        let stddev_tps = if each_s.len() > 1 {
            (tps.iter().map(|r| (r - mean_tps).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stats {
            mean_s: each_s.iter().sum::<f64>() / n,
            each_s,
            mean_tps,
            stddev_tps,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Where {
    Cpu,
    Gpu,
}

/// The benchmark's prompt: `n` token ids spread over the vocabulary.
fn prompt(n: usize, n_vocab: usize) -> Vec<u32> {
    let n_vocab = n_vocab as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 1) % n_vocab) as u32)
        .collect()
}

fn argmax(logits: &[f32]) -> u32 {
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    best as u32
}

/// Prefill and decode of `prompt` and `tokens` greedy tokens after it on the CPU, taking the
/// products as `products` says: an untimed warm-up, then `reps` timed repetitions, each from
/// an empty state.
fn cpu_times(
    model: &mut CpuModel,
    products: Products,
    prompt: &[u32],
    tokens: usize,
    reps: usize,
) -> anyhow::Result<(Stats, Stats)> {
    model.set_products(products);
    let run_once = || -> anyhow::Result<(f64, f64)> {
        let mut state = model.new_state(prompt.len() + tokens);
        let t = Instant::now();
        let mut id = argmax(&model.forward(&mut state, prompt)?);
        let prefill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..tokens {
            id = argmax(&model.forward(&mut state, &[id])?);
        }
        Ok((prefill_s, t.elapsed().as_secs_f64()))
    };
    run_once()?;
    let times = (0..reps)
        .map(|_| run_once())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        Stats::new(prompt.len(), times.iter().map(|t| t.0)),
        Stats::new(tokens, times.iter().map(|t| t.1)),
    ))
}

fn run_cpu(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.json_schema.is_none() && !args.plain && !args.f16_kv,
        "--json-schema, --plain and --f16-kv are for the GPU"
    );
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.into())
            .build_global()
            .context("cannot start the CPU threads")?;
    }
    let threads = rayon::current_num_threads();
    let file = load::open(&args.model)?;
    let bar = load::byte_bar("loading");
    let mut model = CpuModel::load(&file, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("cannot load {}", args.model.display()))?;
    bar.finish_and_clear();
    let prompt = prompt(args.prompt_tokens, model.spec.n_vocab);
    let (gen, reps) = (args.gen_tokens, args.reps);
    let fast = cpu_times(&mut model, Products::Fast, &prompt, gen, reps)?;
    let reference = cpu_times(&mut model, Products::Reference, &prompt, gen, reps)?;
    let tps = |(prefill, decode): (Stats, Stats)| (prefill.mean_tps, decode.mean_tps);
    let (fast_tps, reference_tps) = (tps(fast), tps(reference));
    if args.json {
        let report = serde_json::json!({
            "backend": "cpu",
            "threads": threads,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "prefill_tokens_per_s": fast_tps.0,
            "decode_tokens_per_s": fast_tps.1,
            "reference_prefill_tokens_per_s": reference_tps.0,
            "reference_decode_tokens_per_s": reference_tps.1,
            "prefill_speedup": fast_tps.0 / reference_tps.0,
            "decode_speedup": fast_tps.1 / reference_tps.1,
        });
        println!("{report}");
    } else {
        println!(
            "cpu       {} prompt tokens, {} decoded; mean of {} after a warm-up; {} threads",
            args.prompt_tokens, args.gen_tokens, args.reps, threads
        );
        println!("          prefill tokens/s  decode tokens/s");
        println!("fast      {:>16.1}  {:>15.1}", fast_tps.0, fast_tps.1);
        println!(
            "reference {:>16.1}  {:>15.1}",
            reference_tps.0, reference_tps.1
        );
        println!(
            "ratio     {:>16.2}  {:>15.2}",
            fast_tps.0 / reference_tps.0,
            fast_tps.1 / reference_tps.1
        );
    }
    Ok(())
}

/// Seconds to decode `tokens` tokens greedily after `prompt`, held to `schema`: a reply that
/// completes the schema starts again (the cache grows on), so every token costs a mask.
fn constrained_decode(
    model: GpuModel,
    gpu: &Gpu,
    header: &hearth_core::gguf::Gguf,
    path: &Path,
    schema: &Path,
    prompt: &[u32],
    tokens: usize,
) -> anyhow::Result<f64> {
    let tokenizer = Arc::new(load::tokenizer(header, path)?);
    let text = std::fs::read_to_string(schema)
        .with_context(|| format!("cannot read {}", schema.display()))?;
    let format = Format::JsonSchema {
        schema: serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", schema.display()))?,
        strict: true,
    };
    let grammars = Grammars::new(tokenizer.clone())?;
    let mut backend = Backend::Gpu {
        gpu: gpu.clone(),
        model,
    };
    // The prompt again, untimed (recurrent state cannot be cut back to it).
    backend.truncate(0);
    let (head, last) = prompt.split_at(prompt.len() - 1);
    if !head.is_empty() {
        pollster::block_on(backend.forward(head))?;
    }
    let mut pending = last.to_vec();
    let (mut done, mut elapsed) = (0, 0.0);
    while done < tokens {
        let opts = GenerateOptions {
            max_tokens: tokens - done,
            ..Default::default()
        };
        // Compiling is a per-request cost, not a per-token one: it is not timed.
        let mut gen = Generator::new(tokenizer.clone(), opts, &[])?;
        gen.constrain(grammars.compile(&format)?);
        let t = Instant::now();
        loop {
            let step = pollster::block_on(backend.step(&pending, &mut gen))?;
            done += 1;
            pending = vec![step.token];
            if step.finished.is_some() {
                break;
            }
        }
        elapsed += t.elapsed().as_secs_f64();
    }
    Ok(elapsed)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.gen_tokens > 0 && args.reps > 0,
        "--prompt-tokens, --gen-tokens and --reps must be positive"
    );
    if args.backend == Where::Cpu {
        return run_cpu(&args);
    }
    anyhow::ensure!(args.threads.is_none(), "--threads is for the CPU");
    let options = GpuOptions {
        plain: args.plain,
        max_binding: None,
        f16_kv: args.f16_kv,
    };
    let gpu = pollster::block_on(Gpu::new(&options))?;
    eprintln!("adapter: {}", gpu.describe());
    let file = load::open(&args.model)?;
    let bar = load::byte_bar("loading");
    let max_ctx = args.prompt_tokens + args.gen_tokens;
    let mut model = pollster::block_on(GpuModel::load(&gpu, &file, max_ctx, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))
    .with_context(|| format!("cannot load {}", args.model.display()))?;
    bar.finish_and_clear();

    let prompt = prompt(args.prompt_tokens, model.spec.n_vocab);
    // A warm-up, untimed: the driver compiles pipelines lazily, and the first uses of each
    // buffer and shape cost more than later ones.
    let mut run_once = || -> anyhow::Result<(f64, f64)> {
        model.truncate(0);
        let t = Instant::now();
        let mut id = pollster::block_on(model.forward_greedy(&prompt, None))?;
        let prefill_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..args.gen_tokens {
            id = pollster::block_on(model.forward_greedy(&[id], None))?;
        }
        Ok((prefill_s, t.elapsed().as_secs_f64()))
    };
    run_once()?;
    // Each repetition: prefill from an empty cache, then decode after the prompt.
    let times = (0..args.reps)
        .map(|_| run_once())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let prefill = Stats::new(args.prompt_tokens, times.iter().map(|t| t.0));
    let decode = Stats::new(args.gen_tokens, times.iter().map(|t| t.1));
    let (prefill_s, decode_s) = (prefill.mean_s, decode.mean_s);
    let (kv_bytes, recurrent_bytes) = model.state_bytes();
    // Prefill's share counts the prompt's whole chunks, each timed at the full chunk.
    let chunks = (args.prompt_tokens / CHUNK).max(1);
    let recurrence_s = if model.spec.is_recurrent() {
        let mut time = |runs, chunk| -> anyhow::Result<f64> {
            let t = Instant::now();
            pollster::block_on(model.run_recurrence(runs, chunk))?;
            Ok(t.elapsed().as_secs_f64())
        };
        Some((time(args.gen_tokens, false)?, time(chunks, true)?))
    } else {
        None
    };

    let per_token = model.weight_bytes_per_token();
    let gpu_bytes_held = model.held_bytes();
    let capacity = model.capacity();
    let copy = CopyKernel::new(&gpu, per_token.max(64 << 20));
    copy.submit(&gpu, 1);
    pollster::block_on(gpu.finish())?;
    let runs = 8;
    let t = Instant::now();
    copy.submit(&gpu, runs);
    pollster::block_on(gpu.finish())?;
    let copy_bps = (copy.bytes_moved() * runs as u64) as f64 / t.elapsed().as_secs_f64();

    let constrained_s = match &args.json_schema {
        Some(schema) => Some(constrained_decode(
            model,
            &gpu,
            &file.header,
            &args.model,
            schema,
            &prompt,
            args.gen_tokens,
        )?),
        None => None,
    };
    let constrained_tps = constrained_s.map(|s| args.gen_tokens as f64 / s);

    let (prefill_tps, decode_tps) = (prefill.mean_tps, decode.mean_tps);
    let decode_bps = per_token as f64 * decode_tps;
    let report = serde_json::json!({
        "adapter": gpu.describe(),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "reps": args.reps,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "prefill_tokens_per_s": prefill_tps,
        "decode_tokens_per_s": decode_tps,
        "prefill_tokens_per_s_stddev": prefill.stddev_tps,
        "decode_tokens_per_s_stddev": decode.stddev_tps,
        "prefill_s_each": prefill.each_s,
        "decode_s_each": decode.each_s,
        "weight_bytes_per_token": per_token,
        "decode_bytes_per_s": decode_bps,
        "copy_bytes_per_s": copy_bps,
        "decode_over_copy": decode_bps / copy_bps,
        "gpu_bytes_held": gpu_bytes_held,
        "kv_cache_bytes": kv_bytes,
        "kv_cache_positions": capacity,
        "recurrent_state_bytes": recurrent_bytes,
        "recurrence_s_per_token": recurrence_s.map(|(s, _)| s / args.gen_tokens as f64),
        "decode_recurrence_share": recurrence_s.map(|(s, _)| s / decode_s),
        "recurrence_s_per_chunk": recurrence_s.map(|(_, s)| s / chunks as f64),
        "prefill_recurrence_share": recurrence_s
            .map(|(_, s)| s / chunks as f64 * args.prompt_tokens as f64 / CHUNK as f64 / prefill_s),
        "constrained_decode_tokens_per_s": constrained_tps,
        "constrained_decode_cost": constrained_s.map(|s| s / decode_s - 1.0),
    });
    if args.json {
        println!("{report}");
    } else {
        let gb = |b: f64| b / 1e9;
        // Three significant figures: software adapters run well under one token a second.
        let rate = |r: f64| {
            format!(
                "{r:.*}",
                (2 - r.log10().floor() as i64).clamp(0, 4) as usize
            )
        };
        let spread = |s: &Stats| {
            if args.reps > 1 {
                format!(", mean of {} ± {}", args.reps, rate(s.stddev_tps))
            } else {
                String::new()
            }
        };
        println!(
            "prefill   {} tokens/s ({} tokens in {prefill_s:.2} s{})",
            rate(prefill_tps),
            args.prompt_tokens,
            spread(&prefill)
        );
        println!(
            "decode    {} tokens/s ({} tokens in {decode_s:.2} s{})",
            rate(decode_tps),
            args.gen_tokens,
            spread(&decode)
        );
        println!(
            "weights   {:.2} MB read per decoded token",
            per_token as f64 / 1e6
        );
        println!("achieved  {:.2} GB/s of weights", gb(decode_bps));
        println!(
            "copy      {:.2} GB/s (read + write, same device)",
            gb(copy_bps)
        );
        println!("ratio     {:.3} of the copy kernel", decode_bps / copy_bps);
        println!(
            "memory    {:.2} MB held on the GPU",
            gpu_bytes_held as f64 / 1e6
        );
        println!(
            "state     {:.2} MB KV cache ({} positions), {:.2} MB recurrent state (with its snapshots)",
            kv_bytes as f64 / 1e6,
            capacity,
            recurrent_bytes as f64 / 1e6
        );
        match recurrence_s {
            Some((step, chunk)) => {
                println!(
                    "recurrence {:.1} ms per decoded token, {:.1}% of decode time",
                    step * 1e3 / args.gen_tokens as f64,
                    step / decode_s * 100.0
                );
                let per_chunk = chunk / chunks as f64;
                println!(
                    "           {:.1} ms per {CHUNK}-token prompt chunk, {:.1}% of prefill time",
                    per_chunk * 1e3,
                    per_chunk * args.prompt_tokens as f64 / CHUNK as f64 / prefill_s * 100.0
                );
            }
            None => println!("recurrence none (every layer is attention)"),
        }
        if let Some(s) = constrained_s {
            println!(
                "schema    {} tokens/s decoding held to the JSON schema, {:+.1}% per token",
                rate(args.gen_tokens as f64 / s),
                (s / decode_s - 1.0) * 100.0
            );
        }
    }
    Ok(())
}
