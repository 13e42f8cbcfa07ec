use crate::load;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: load::Input,
    /// One JSON object: tokens, the full last-position logits and the top 10.
    #[arg(long)]
    json: bool,
}

/// The `k` highest logits, highest first, ties broken by the lower id.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    ids.into_iter()
        .take(k)
        .map(|i| (i, logits[i as usize]))
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = if args.input.prompt.is_text() {
        Some(load::tokenizer(
            &load::open(&args.input.model)?.header,
            &args.input.model,
        )?)
    } else {
        None
    };
    let tokens = args.input.prompt.ids(tokenizer.as_ref())?;
    let mut model = load::model(&args.input.model, args.input.backend, tokens.len())?;
    let logits = load::forward(&mut model, &tokens)?;
    let top = top_k(&logits, 10);
    if args.json {
        let out = serde_json::json!({ "tokens": tokens, "last_logits": logits, "top": top });
        println!("{out}");
    } else {
        println!("top logits after {} tokens:", tokens.len());
        for (id, logit) in top {
            println!("  {id:>8} {logit:>12.6}");
        }
    }
    Ok(())
}
