//! Writes the generated large model (see `hearth_fixtures::large_model`) for benchmarks:
//! `cargo run --release -p hearth-fixtures --example large_model -- OUT.gguf`.

use hearth_core::gguf::Gguf;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: large_model OUT.gguf");
        std::process::exit(2);
    };
    let source = hearth_fixtures::model_fixture("qwen2-tiny.q8_0").gguf_bytes();
    let header = Gguf::parse(&source, source.len() as u64).map_err(std::io::Error::other)?;
    let started = std::time::Instant::now();
    hearth_fixtures::large_model::write(
        out.as_ref(),
        &header,
        &hearth_fixtures::large_model::Shape::default(),
        1,
    )?;
    eprintln!("wrote {out} in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
