//! Opening model files with a progress bar, shared by the commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hearth_core::gguf::{Gguf, GgufFile, MappedFile};
use hearth_core::model::Products;
use hearth_core::sampling::{Generator, Step};
use hearth_core::tokenizer::Tokenizer;
use hearth_gpu::{Backend, Gpu, GpuOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The forward pass on the CPU, with its fast products where the weights' format has them.
    Cpu,
    /// The CPU with its reference products (weights decoded to f32): the oracle.
    CpuReference,
    /// The GPU engine (WebGPU through wgpu: Vulkan, Metal or DX12).
    Gpu,
    /// The GPU where a hardware adapter exists, otherwise the CPU (a software adapter such as
    /// lavapipe is slower than the CPU engine).
    #[default]
    Auto,
}

/// Maps a GGUF file and reads its header.
pub fn open(path: &Path) -> anyhow::Result<GgufFile<MappedFile>> {
    let source =
        MappedFile::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    GgufFile::open(source).with_context(|| format!("cannot read {}", path.display()))
}

/// A bar on stderr that shows bytes; hidden when stderr is not a terminal.
pub fn byte_bar(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// Opens and loads a model on `choice` with a KV cache of up to `positions` positions (at most
/// the model's context length), showing a progress bar while weights load and naming the
/// backend on stderr.
pub fn model(path: &Path, choice: BackendChoice, positions: usize) -> anyhow::Result<Backend> {
    let file = open(path)?;
    let gpu = match choice {
        BackendChoice::Cpu | BackendChoice::CpuReference => None,
        BackendChoice::Gpu => Some(pollster::block_on(Gpu::new(&GpuOptions::default()))?),
        BackendChoice::Auto => match pollster::block_on(Gpu::new(&GpuOptions::default())) {
            Ok(gpu) if gpu.is_software() => {
                eprintln!(
                    "{} is a software adapter, slower than the CPU engine; running on the CPU",
                    gpu.describe()
                );
                None
            }
            Ok(gpu) => Some(gpu),
            Err(e) => {
                eprintln!("{e}; running on the CPU");
                None
            }
        },
    };
    let bar = byte_bar("loading");
    let mut progress = |loaded, total| {
        bar.set_length(total);
        bar.set_position(loaded);
    };
    let on_gpu =
        gpu.map(|gpu| pollster::block_on(Backend::load_gpu(gpu, &file, positions, &mut progress)));
    let mut model = match on_gpu {
        Some(Ok(model)) => Ok(model),
        // Under auto, a device that cannot take the model leaves it to the CPU.
        Some(Err(e)) if choice == BackendChoice::Auto && e.is_device_failure() => {
            eprintln!("{e}; running on the CPU");
            Backend::load_cpu(&file, positions, &mut progress).map_err(anyhow::Error::from)
        }
        Some(Err(e)) => Err(e.into()),
        None => Backend::load_cpu(&file, positions, &mut progress).map_err(anyhow::Error::from),
    }
    .with_context(|| format!("cannot load {}", path.display()))?;
    bar.finish_and_clear();
    if let (Backend::Cpu { model, .. }, BackendChoice::CpuReference) = (&mut model, choice) {
        model.set_products(Products::Reference);
    }
    match model.adapter() {
        Some((adapter, _)) => eprintln!("backend: gpu ({adapter})"),
        None => eprintln!("backend: cpu"),
    }
    Ok(model)
}

/// Runs `tokens` at the model's next positions; the logits of the last one.
pub fn forward(model: &mut Backend, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
    Ok(pollster::block_on(model.forward(tokens))?)
}

/// Runs `tokens` at the model's next positions and takes `generator`'s next token.
pub fn step(
    model: &mut Backend,
    tokens: &[u32],
    generator: &mut Generator,
) -> anyhow::Result<Step> {
    Ok(pollster::block_on(model.step(tokens, generator))?)
}

/// Parses "1,2,3" into token ids.
pub fn parse_tokens(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse()
                .with_context(|| format!("{t:?} is not a token id"))
        })
        .collect()
}

/// The tokenizer a model file describes.
pub fn tokenizer(header: &Gguf, path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_gguf(header)
        .with_context(|| format!("cannot read the tokenizer of {}", path.display()))
}

/// What a command runs: the model, its prompt, and the backend it runs on.
#[derive(clap::Args)]
pub struct Input {
    /// The GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub prompt: Prompt,
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
}

/// A prompt given either as token ids or as text.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Prompt {
    /// Comma-separated prompt token ids.
    #[arg(long)]
    tokens: Option<String>,
    /// Prompt text, tokenized with the model's tokenizer; special-token text such as
    /// <|im_start|> becomes that token, and BOS is added where the model asks for it.
    #[arg(long)]
    prompt: Option<String>,
}

impl Prompt {
    /// Whether the prompt is text, which needs the model's tokenizer.
    pub fn is_text(&self) -> bool {
        self.prompt.is_some()
    }

    /// The prompt's token ids (never empty); `tokenizer` encodes a text prompt.
    pub fn ids(&self, tokenizer: Option<&Tokenizer>) -> anyhow::Result<Vec<u32>> {
        let ids = match (&self.tokens, &self.prompt, tokenizer) {
            (Some(tokens), _, _) => parse_tokens(tokens)?,
            (None, Some(text), Some(tokenizer)) => tokenizer.encode(text, true),
            _ => anyhow::bail!("give the prompt with --tokens or --prompt"),
        };
        anyhow::ensure!(
            !ids.is_empty(),
            "the prompt is empty: it has no tokens to run"
        );
        Ok(ids)
    }
}
