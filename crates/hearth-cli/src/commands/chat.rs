use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context;

use hearth_core::chat::{ChatError, ChatTemplate, Message};

use super::generate::SamplingArgs;
use crate::load::{self, BackendChoice};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file; it must have a chat template (tokenizer.chat_template).
    #[arg(long)]
    model: PathBuf,
    /// A system prompt that starts the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Context positions to hold (at most the model's context length).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[arg(long, value_enum, default_value_t)]
    backend: BackendChoice,
}

/// Reads one message per line from stdin and streams each reply; ends at end of input.
pub fn run(args: Args) -> anyhow::Result<()> {
    let header = load::open(&args.model)?.header;
    let tokenizer = Arc::new(load::tokenizer(&header, &args.model)?);
    let template = match ChatTemplate::from_gguf(&header, &tokenizer) {
        Err(ChatError::NoTemplate) => anyhow::bail!(
            "{} has no chat template; use `hearth generate --prompt` for plain text",
            args.model.display()
        ),
        t => t?,
    };
    // Check the options before the (slow) model load.
    let format = args.sampling.format(&tokenizer)?;
    args.sampling
        .generator(&tokenizer, format.as_ref(), args.max_tokens, &[])?;
    let mut model = load::model(&args.model, args.backend, args.ctx)?;

    let interactive = std::io::stdin().is_terminal();
    if interactive {
        let name = header.get_str("general.name").unwrap_or("the model");
        eprintln!("Chatting with {name}. Type a message and press Enter; Ctrl-D quits.");
    }
    let mut messages: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s))
        .collect();
    // Tokens whose keys and values are in the cache, to reuse the prefix the next turn shares.
    let mut cached: Vec<u32> = Vec::new();
    let mut out = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        messages.push(Message::new("user", line));
        let prompt = match template.render(&messages, true) {
            Ok(p) => p,
            Err(ChatError::Raised(msg)) => {
                eprintln!("the chat template refused this message: {msg}");
                messages.pop();
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the chat template of {} cannot render this conversation",
                    args.model.display()
                )))
            }
        };
        // The template writes BOS itself where the model wants one, as transformers assumes.
        let ids = tokenizer.encode(&prompt, false);
        anyhow::ensure!(!ids.is_empty(), "the chat template rendered nothing");
        anyhow::ensure!(
            ids.len() + args.max_tokens <= model.capacity(),
            "the conversation ({} tokens) and a reply of up to {} no longer fit the context of {} positions",
            ids.len(),
            args.max_tokens,
            model.capacity()
        );
        // At least the last prompt token runs, for the logits of the first reply token.
        let shared = cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        // Recurrent state may only come back to an earlier checkpoint.
        let kept = model.truncate(shared);
        let mut pending = ids[kept..].to_vec();
        cached = ids.clone();

        let mut gen =
            args.sampling
                .generator(&tokenizer, format.as_ref(), args.max_tokens, &ids)?;
        let mut reply = String::new();
        loop {
            let step = load::step(&mut model, &pending, &mut gen)?;
            if pending.len() > 1 {
                // Where the prompt ends: the next turn's prompt starts the same way.
                model.checkpoint();
            }
            write!(out, "{}", step.text)?;
            out.flush()?;
            reply.push_str(&step.text);
            if step.finished.is_some() {
                // Where the reply ends, which the next turn's prompt repeats.
                model.checkpoint();
                break;
            }
            pending = vec![step.token];
            cached.push(step.token);
        }
        writeln!(out)?;
        messages.push(Message::new("assistant", reply));
    }
    if interactive {
        eprintln!();
    }
    Ok(())
}
