use std::path::PathBuf;

use hearth_core::model::{Ffn, Mixer, ModelSpec};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    model: PathBuf,
    /// Also list every metadata key and every tensor.
    #[arg(long)]
    all: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = crate::load::open(&args.model)?;
    let h = &file.header;
    println!(
        "file:          {} (GGUF v{}, {} bytes)",
        args.model.display(),
        h.version,
        h.file_len
    );
    if let Some(name) = h.get_str("general.name") {
        println!("name:          {name}");
    }
    println!("architecture:  {}", h.architecture().unwrap_or("(none)"));
    match ModelSpec::from_gguf(h) {
        Ok(s) => {
            println!(
                "sizes:         vocab {}, embedding {}, layers {}, context {}",
                s.n_vocab,
                s.n_embd,
                s.n_layer(),
                s.context_length
            );
            print_layers(&s);
            println!(
                "output head:   {}",
                if s.tied_output() {
                    "tied to the token embedding"
                } else {
                    "separate"
                }
            );
            if let Err(e) = s.check_tensors(h) {
                println!("cannot run:    {e}");
            }
        }
        Err(e) => println!("cannot run:    {e}"),
    }
    let params: u64 = h.tensors().iter().map(|t| t.n_elements()).sum();
    let bytes: u64 = h.tensors().iter().map(|t| t.n_bytes).sum();
    println!(
        "parameters:    {params} in {} tensors, {bytes} bytes",
        h.tensors().len()
    );
    let types: Vec<String> = ModelSpec::type_counts(h)
        .iter()
        .map(|(ty, n)| format!("{ty} x{n}"))
        .collect();
    println!("tensor types:  {}", types.join(", "));
    let tokenizer = h.get_str("tokenizer.ggml.model").unwrap_or("(none)");
    let vocab = h.get_array("tokenizer.ggml.tokens").map_or(0, |a| a.len());
    let pre = h
        .get_str("tokenizer.ggml.pre")
        .map(|p| format!(", pre-tokenizer {p}"))
        .unwrap_or_default();
    println!("tokenizer:     {tokenizer} ({vocab} tokens{pre})");
    match h.get_str("tokenizer.chat_template") {
        Some(t) => println!("chat template:\n{t}"),
        None => println!("chat template: (none)"),
    }
    if args.all {
        println!("\nmetadata:");
        for (k, v) in h.metadata() {
            println!("  {k} = {}", v.summary());
        }
        println!("\ntensors:");
        for t in h.tensors() {
            println!(
                "  {:<32} {:<6} {:?} @ {}",
                t.name,
                t.ty.name(),
                t.dims,
                t.offset
            );
        }
    }
    Ok(())
}

/// The layer kinds, each with its shape and the layers that have it (such as "0-2, 4").
/// Where some layers attend within a sliding window (local), the others are global.
fn print_layers(s: &ModelSpec) {
    let windowed = s.attention_layers().any(|a| a.window.is_some());
    let mut kinds: Vec<(String, Vec<usize>)> = Vec::new();
    for (l, layer) in s.layers.iter().enumerate() {
        let ffn = match layer.ffn {
            Ffn::SiluGated { n_ff } | Ffn::SiluGatedFused { n_ff } => {
                format!("feed-forward {n_ff}")
            }
            Ffn::GeluGated { n_ff } => format!("feed-forward {n_ff} (GeGLU)"),
            Ffn::Gelu { n_ff } => format!("GELU feed-forward {n_ff}"),
        };
        let mixer = match &layer.mixer {
            Mixer::Attention(a) => format!(
                "{}: {} heads, {} key/value heads, head dim {}{}{}{}{}{}; {}",
                match a.window {
                    Some(w) => format!("local attention (window {w})"),
                    None if windowed => "global attention".to_string(),
                    None => "attention".to_string(),
                },
                a.n_head,
                a.n_head_kv,
                a.head_dim,
                if a.qkv_bias { ", QKV bias" } else { "" },
                if a.qk_norm { ", Q/K norm" } else { "" },
                if a.output_gate { ", output gate" } else { "" },
                if a.fused_qkv { ", fused QKV" } else { "" },
                if a.out_bias { ", output bias" } else { "" },
                match a.rope {
                    Some(r) => format!(
                        "rope {:?} over {} dims, base {}{}{}{}",
                        r.style,
                        r.dim,
                        r.base,
                        if r.freq_scale != 1.0 {
                            format!(", linear scaling {}", 1.0 / r.freq_scale)
                        } else {
                            String::new()
                        },
                        if r.freqs {
                            ", per-frequency factors (Llama 3 scaling)"
                        } else {
                            ""
                        },
                        match r.long_rope {
                            Some(l) => format!(
                                ", LongRoPE (long factors past {} positions, attention factor {})",
                                l.original_context, l.attn_factor
                            ),
                            None => String::new(),
                        },
                    ),
                    None if s.arch.learned_positions => "learned positions".to_string(),
                    None => "no rope (NoPE)".to_string(),
                },
            ),
            Mixer::DeltaNet(d) => format!(
                "gated delta net: {} key heads, {} value heads, head dims {}/{}, conv kernel {}",
                d.n_k_heads, d.n_v_heads, d.head_k_dim, d.head_v_dim, d.conv_kernel
            ),
            Mixer::ShortConv(c) => format!(
                "gated short convolution: {} channels, kernel {}",
                c.channels, c.conv_kernel
            ),
        };
        let fused = match layer.ffn.fused_parts() {
            Some(_) => " (fused gate|up)",
            None => "",
        };
        let post = if layer.post_norms { "; post-norms" } else { "" };
        let kind = format!("{mixer}; {ffn}{fused}{post}");
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, ls)) => ls.push(l),
            None => kinds.push((kind, vec![l])),
        }
    }
    for (kind, ls) in kinds {
        let label = if ls.len() == s.n_layer() {
            "every layer".to_string()
        } else {
            format!("layers {}", ranges(&ls))
        };
        println!("layers:        {label}: {kind}");
    }
}

/// `[0, 1, 2, 4]` as "0-2, 4".
fn ranges(ls: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ls.len() {
        let mut j = i;
        while j + 1 < ls.len() && ls[j + 1] == ls[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ls[i].to_string()
        } else {
            format!("{}-{}", ls[i], ls[j])
        });
        i = j + 1;
    }
    out.join(", ")
}
