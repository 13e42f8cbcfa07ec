//! Shared by the integration tests: the committed fixtures and how to read them.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The bytes of a gzip-compressed fixture.
pub fn gunzip(path: &std::path::Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// One model fixture of `tests/fixtures/models/manifest.json`.
pub struct ModelFixture {
    pub name: String,
    pub ty: String,
    pub gguf: PathBuf,
    pub reference: PathBuf,
}

pub fn model_fixtures() -> Vec<ModelFixture> {
    let dir = fixtures_dir().join("models");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| ModelFixture {
            name: f["name"].as_str().unwrap().to_string(),
            ty: f["type"].as_str().unwrap().to_string(),
            gguf: dir.join(f["gguf"].as_str().unwrap()),
            reference: dir.join(f["ref"].as_str().unwrap()),
        })
        .collect()
}
