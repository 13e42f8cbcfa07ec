use std::path::PathBuf;

use crate::load;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (a vocabulary-only file will do).
    #[arg(long)]
    model: PathBuf,
    /// The text to tokenize. Special-token text such as <|im_start|> becomes that token.
    #[arg(long)]
    text: String,
    /// Add no BOS/EOS (Hugging Face's add_special_tokens=False).
    #[arg(long)]
    no_special: bool,
    /// Print {"tokens":[...]} instead of one token per line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = load::tokenizer(&load::open(&args.model)?.header, &args.model)?;
    let ids = tokenizer.encode(&args.text, !args.no_special);
    if args.json {
        println!("{}", serde_json::json!({ "tokens": ids }));
    } else {
        for id in ids {
            println!("{id:>8}  {:?}", tokenizer.piece(id));
        }
    }
    Ok(())
}
