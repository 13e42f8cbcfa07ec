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
    /// Print the logits after a prompt.
    Logits(commands::logits::Args),
    /// Continue a prompt, streaming the text as it is produced.
    Generate(commands::generate::Args),
    /// Chat with a model on stdin, one message per line, with its chat template applied.
    Chat(commands::chat::Args),
    /// Print the token ids of a text.
    Tokenize(commands::tokenize::Args),
    /// Re-quantize a model file.
    Quantize(commands::quantize::Args),
    /// Measure prefill and decode speed on the GPU against the device's copy bandwidth.
    Bench(commands::bench::Args),
}

fn main() -> anyhow::Result<()> {
    // Rust ignores SIGPIPE, so printing into a pipe whose reader has gone (`| head`) would
    // panic; take the default action instead and end quietly, as other tools do.
    #[cfg(unix)]
    // SAFETY: nothing else runs yet, and SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse().command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Bench(a) => commands::bench::run(a),
    }
}
