//! `hearth`: run, inspect and convert GGUF language models from the command line.

mod commands;
mod load;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hearth", version, about = "Run quantized GGUF language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, sizes, tensor types, tokenizer and chat template.
    Inspect(commands::inspect::Args),
    /// Print the logits after a token sequence.
    Logits(commands::logits::Args),
    /// Continue a token sequence, streaming each token as it is produced.
    Generate(commands::generate::Args),
    /// Re-quantize a model file.
    Quantize(commands::quantize::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
    }
}
