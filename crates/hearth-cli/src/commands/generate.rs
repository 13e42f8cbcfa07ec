use std::io::Write;
use std::path::PathBuf;

use crate::load::{self, Backend};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated prompt token ids.
    #[arg(long)]
    tokens: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[arg(long, value_enum, default_value_t)]
    backend: Backend,
    /// One JSON object at the end instead of streaming.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let prompt = load::parse_tokens(&args.tokens)?;
    let model = load::model(&args.model, args.backend)?;
    let mut cache = model.new_cache(prompt.len() + args.max_tokens);
    let mut logits = model.forward(&mut cache, &prompt)?;
    let mut generated = Vec::with_capacity(args.max_tokens);
    let mut out = std::io::stdout().lock();
    for _ in 0..args.max_tokens {
        let next = crate::commands::logits::top_k(&logits, 1)[0].0;
        generated.push(next);
        if !args.json {
            write!(out, "{next} ")?;
            out.flush()?;
        }
        if generated.len() == args.max_tokens {
            break;
        }
        logits = model.forward(&mut cache, &[next])?;
    }
    if args.json {
        let json = serde_json::json!({ "tokens": prompt, "generated": generated });
        writeln!(out, "{json}")?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}
