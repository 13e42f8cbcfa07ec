use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context;
use hearth_core::model::requantize::{requantize, Scheme};
use indicatif::ProgressBar;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Type {
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    /// Q4_K with Q6_K for the output head and half of attn_v / ffn_down, as llama.cpp does.
    #[value(name = "q4_k_m")]
    Q4KM,
    /// Q5_K with Q6_K where q4_k_m has it, as llama.cpp does.
    #[value(name = "q5_k_m")]
    Q5KM,
    /// Q6_K throughout.
    #[value(name = "q6_k")]
    Q6K,
    /// F16 throughout; vectors stay F32.
    #[value(name = "f16")]
    F16,
}

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to read.
    input: PathBuf,
    /// Where to write the result.
    output: PathBuf,
    #[arg(long = "type", value_enum)]
    ty: Type,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = crate::load::open(&args.input)?;
    let scheme = match args.ty {
        Type::Q8_0 => Scheme::Q8_0,
        Type::Q4_0 => Scheme::Q4_0,
        Type::Q4KM => Scheme::Q4KM,
        Type::Q5KM => Scheme::Q5KM,
        Type::Q6K => Scheme::Q6K,
        Type::F16 => Scheme::F16,
    };
    // Write beside the target and rename, so a failure never leaves a half-written model.
    let tmp = args.output.with_extension("gguf.tmp");
    let out = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let bar = ProgressBar::new(file.header.tensors().len() as u64).with_message("quantizing");
    let result = requantize(&file, scheme, BufWriter::new(out), &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).context("quantizing failed");
    }
    std::fs::rename(&tmp, &args.output)?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
