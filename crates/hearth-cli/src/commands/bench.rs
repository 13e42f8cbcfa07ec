//! `hearth bench`: prefill and decode speed on the GPU, decode's achieved weight bandwidth
//! against a plain copy kernel measured on the same device in the same run, the memory held by
//! the KV cache and by recurrent state, and the share of decode time the recurrence takes (its
//! launches timed alone, as many times as tokens were decoded).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use hearth_gpu::bench::CopyKernel;
use hearth_gpu::{Gpu, GpuModel, GpuOptions};

use crate::load;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Tokens in the prompt.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded after the prompt, greedily.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Use only the plainest kernels (no shader-f16, no subgroups).
    #[arg(long)]
    plain: bool,
    /// Keep the KV cache in f16 where the device has shader-f16.
    #[arg(long)]
    f16_kv: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.gen_tokens > 0,
        "--prompt-tokens and --gen-tokens must be positive"
    );
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

    let n_vocab = model.spec.n_vocab as u64;
    let prompt: Vec<u32> = (0..args.prompt_tokens as u64)
        .map(|i| ((i * 7919 + 1) % n_vocab) as u32)
        .collect();
    // A first step compiles what the driver compiles lazily; it is not timed.
    pollster::block_on(model.forward_greedy(&prompt[..1]))?;
    model.truncate(0);

    let t = Instant::now();
    let mut id = pollster::block_on(model.forward_greedy(&prompt))?;
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..args.gen_tokens {
        id = pollster::block_on(model.forward_greedy(&[id]))?;
    }
    let decode_s = t.elapsed().as_secs_f64();
    let (kv_bytes, recurrent_bytes) = model.state_bytes();
    let recurrence_s = if model.spec.is_recurrent() {
        let t = Instant::now();
        pollster::block_on(model.run_recurrence(args.gen_tokens))?;
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };

    let per_token = model.weight_bytes_per_token();
    let copy = CopyKernel::new(&gpu, per_token.max(64 << 20));
    copy.submit(&gpu, 1);
    pollster::block_on(gpu.finish())?;
    let runs = 8;
    let t = Instant::now();
    copy.submit(&gpu, runs);
    pollster::block_on(gpu.finish())?;
    let copy_bps = (copy.bytes_moved() * runs as u64) as f64 / t.elapsed().as_secs_f64();

    let prefill_tps = args.prompt_tokens as f64 / prefill_s;
    let decode_tps = args.gen_tokens as f64 / decode_s;
    let decode_bps = per_token as f64 * decode_tps;
    let report = serde_json::json!({
        "adapter": gpu.describe(),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "prefill_tokens_per_s": prefill_tps,
        "decode_tokens_per_s": decode_tps,
        "weight_bytes_per_token": per_token,
        "decode_bytes_per_s": decode_bps,
        "copy_bytes_per_s": copy_bps,
        "decode_over_copy": decode_bps / copy_bps,
        "gpu_bytes_held": model.held_bytes(),
        "kv_cache_bytes": kv_bytes,
        "kv_cache_positions": model.capacity(),
        "recurrent_state_bytes": recurrent_bytes,
        "recurrence_s_per_token": recurrence_s.map(|s| s / args.gen_tokens as f64),
        "decode_recurrence_share": recurrence_s.map(|s| s / decode_s),
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
        println!(
            "prefill   {} tokens/s ({} tokens in {prefill_s:.1} s)",
            rate(prefill_tps),
            args.prompt_tokens
        );
        println!(
            "decode    {} tokens/s ({} tokens in {decode_s:.1} s)",
            rate(decode_tps),
            args.gen_tokens
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
            model.held_bytes() as f64 / 1e6
        );
        println!(
            "state     {:.2} MB KV cache ({} positions), {:.2} MB recurrent state (with its snapshots)",
            kv_bytes as f64 / 1e6,
            model.capacity(),
            recurrent_bytes as f64 / 1e6
        );
        match recurrence_s {
            Some(s) => println!(
                "recurrence {:.1} ms per decoded token, {:.1}% of decode time",
                s * 1e3 / args.gen_tokens as f64,
                s / decode_s * 100.0
            ),
            None => println!("recurrence none (every layer is attention)"),
        }
    }
    Ok(())
}
