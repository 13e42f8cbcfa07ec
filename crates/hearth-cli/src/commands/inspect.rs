use std::path::PathBuf;

use hearth_core::model::ModelSpec;

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
                "sizes:         vocab {}, embedding {}, layers {}, feed-forward {}",
                s.n_vocab, s.n_embd, s.n_layer, s.n_ff
            );
            println!(
                "attention:     {} heads, {} key/value heads, head dim {}, context {}",
                s.n_head, s.n_head_kv, s.head_dim, s.context_length
            );
            println!(
                "rope:          {:?} style, base {}, {} dims{}",
                s.rope_style,
                s.rope_base,
                s.rope_dim,
                if s.has_rope_freqs {
                    ", per-frequency factors (Llama 3 scaling)"
                } else {
                    ""
                }
            );
            println!(
                "output head:   {}",
                if s.tied_output {
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
