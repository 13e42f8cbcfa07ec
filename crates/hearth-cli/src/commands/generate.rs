use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use std::sync::Arc;

use hearth_core::constrain::{Format, Grammars};
use hearth_core::sampling::{GenerateOptions, Generator, SamplingOptions};
use hearth_core::tokenizer::Tokenizer;

use crate::load;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    input: load::Input,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// One JSON object at the end instead of streaming: prompt ids, generated ids and text.
    #[arg(long)]
    json: bool,
}

/// How tokens are chosen; shared by `generate` and `chat`.
#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// 0 always takes the most likely token; higher values sample more freely.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens whose probabilities sum to p (1: all).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: none).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1: off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Lower a recent token's logit by this much per occurrence.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Lower the logit of every recent token by this much.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// TOKEN=BIAS added to a token's logit; -inf bans it. Repeatable.
    #[arg(long = "logit-bias", value_name = "TOKEN=BIAS", value_parser = parse_bias)]
    logit_bias: Vec<(u32, f32)>,
    /// Random seed: the same seed and options give the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears; it is not printed. Repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-generation tokens such as EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// Output only JSON valid against the JSON schema in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "grammar")]
    json_schema: Option<PathBuf>,
    /// Output only text the Lark grammar in FILE (llguidance's dialect) accepts.
    #[arg(long, value_name = "FILE")]
    grammar: Option<PathBuf>,
}

fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s
        .split_once('=')
        .ok_or("expected TOKEN=BIAS, such as 42=-inf")?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} is not a token id"))?;
    let bias = bias
        .trim()
        .parse()
        .map_err(|_| format!("{bias:?} is not a number"))?;
    Ok((id, bias))
}

/// An output format and the tokenizer's vocabulary it is compiled against.
pub struct Held {
    grammars: Grammars,
    format: Format,
}

impl SamplingArgs {
    /// The output format asked for, compiled against `tokenizer` once per run; `None` for
    /// free text.
    pub fn format(&self, tokenizer: &Arc<Tokenizer>) -> anyhow::Result<Option<Held>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let format = match (&self.json_schema, &self.grammar) {
            (Some(path), _) => Format::JsonSchema {
                schema: serde_json::from_str(&read(path)?)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
                strict: true,
            },
            (None, Some(path)) => Format::Lark(read(path)?),
            (None, None) => return Ok(None),
        };
        let grammars = Grammars::new(tokenizer.clone())?;
        Ok(Some(Held { grammars, format }))
    }

    /// A generator for `prompt` under these options, held to `format` (compiled here: make
    /// one before the model loads, so that a format that cannot be used fails first).
    pub fn generator(
        &self,
        tokenizer: &Arc<Tokenizer>,
        format: Option<&Held>,
        max_tokens: usize,
        prompt: &[u32],
    ) -> anyhow::Result<Generator> {
        let mut gen = Generator::new(tokenizer.clone(), self.options(max_tokens), prompt)
            .context("invalid sampling options")?;
        if let Some(held) = format {
            gen.constrain(held.grammars.compile(&held.format)?);
        }
        Ok(gen)
    }

    fn options(&self, max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingOptions {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                penalty_last_n: self.repeat_last_n,
                logit_bias: self.logit_bias.clone(),
                seed: self.seed,
            },
            max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tokenizer = Arc::new(load::tokenizer(
        &load::open(&args.input.model)?.header,
        &args.input.model,
    )?);
    let prompt = args.input.prompt.ids(Some(&tokenizer))?;
    // Check the options before the (slow) model load.
    let format = args.sampling.format(&tokenizer)?;
    let mut gen = args
        .sampling
        .generator(&tokenizer, format.as_ref(), args.max_tokens, &prompt)?;
    let mut model = load::model(
        &args.input.model,
        args.input.backend,
        prompt.len() + args.max_tokens,
    )?;
    let mut pending = prompt.clone();
    let mut text = String::new();
    let mut out = std::io::stdout().lock();
    let finish = loop {
        let step = load::step(&mut model, &pending, &mut gen)?;
        if !args.json {
            write!(out, "{}", step.text)?;
            out.flush()?;
        }
        text.push_str(&step.text);
        if let Some(finish) = step.finished {
            break finish;
        }
        pending = vec![step.token];
    };
    if args.json {
        let json = serde_json::json!({
            "tokens": prompt,
            "generated": gen.generated(),
            "text": text,
            "finish_reason": finish.as_str(),
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(out)?;
    }
    Ok(())
}
