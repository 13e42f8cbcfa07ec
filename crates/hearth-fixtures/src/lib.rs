//! The committed test fixtures under `tests/fixtures/`, and the comparisons every suite makes
//! against their references.

pub mod large_model;

use std::io::Read;
use std::path::{Path, PathBuf};

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The bytes of a gzip-compressed fixture.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out
}

/// One model of `tests/fixtures/models/manifest.json`. Its paths there are relative to that
/// directory: most name a gzip-compressed copy beside it, the demo model the uncompressed file
/// in `www/models/`.
pub struct ModelFixture {
    pub name: String,
    /// Lower-case type, such as "f32" or "q4_k_m".
    pub ty: String,
    /// The model file, gzip-compressed where its name ends in ".gz".
    pub gguf: PathBuf,
    pub reference: PathBuf,
}

impl ModelFixture {
    /// "name.type", as the files are named.
    pub fn label(&self) -> String {
        format!("{}.{}", self.name, self.ty)
    }

    pub fn gguf_bytes(&self) -> Vec<u8> {
        if self.gguf.extension().is_some_and(|e| e == "gz") {
            gunzip(&self.gguf)
        } else {
            std::fs::read(&self.gguf).unwrap_or_else(|e| panic!("{}: {e}", self.gguf.display()))
        }
    }

    /// The PyTorch reference: `{"sequences": [{"tokens", "last_logits", "greedy", "greedy_gaps"}]}`.
    pub fn reference(&self) -> serde_json::Value {
        serde_json::from_slice(&gunzip(&self.reference)).expect("reference is JSON")
    }
}

pub fn model_fixtures() -> Vec<ModelFixture> {
    let dir = fixtures_dir().join("models");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    manifest["fixtures"]
        .as_array()
        .expect("fixtures list")
        .iter()
        .map(|f| ModelFixture {
            name: f["name"].as_str().expect("name").to_string(),
            ty: f["type"].as_str().expect("type").to_string(),
            gguf: dir.join(f["gguf"].as_str().expect("gguf")),
            reference: dir.join(f["ref"].as_str().expect("ref")),
        })
        .collect()
}

/// The fixture labelled "name.type".
pub fn model_fixture(label: &str) -> ModelFixture {
    model_fixtures()
        .into_iter()
        .find(|f| f.label() == label)
        .unwrap_or_else(|| panic!("no fixture {label}"))
}

/// Index of the largest value, the lowest index among equals (as PyTorch's argmax).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Largest |a - b| over two slices of the same length (NaN where either holds one).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
}

/// Largest |v|.
pub fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Largest |a - b|, as a fraction of the range of the reference `b`.
pub fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let max = b.iter().fold(f32::MIN, |m, &v| m.max(v));
    let min = b.iter().fold(f32::MAX, |m, &v| m.min(v));
    max_abs_diff(a, b) / (max - min).max(f32::MIN_POSITIVE)
}

/// JSON numbers as f32s.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// JSON numbers as token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A fresh directory for one test's files.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hearth-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Decompresses `tests/fixtures/<gz>` into `dir`, named without the `.gz`.
pub fn unpack(gz: &str, dir: &Path) -> PathBuf {
    let name = gz.rsplit('/').next().unwrap_or(gz).trim_end_matches(".gz");
    let out = dir.join(name);
    std::fs::write(&out, gunzip(&fixtures_dir().join(gz)))
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    out
}

/// `gguf` (a whole GGUF file) with the metadata `set` replacing or adding keys, its tensors
/// unchanged.
pub fn with_metadata(gguf: &[u8], set: &[(&str, hearth_core::gguf::Value)]) -> Vec<u8> {
    use hearth_core::gguf::{rewrite_metadata, Gguf};
    let header = Gguf::parse(gguf, gguf.len() as u64).expect("a valid GGUF file");
    let mut metadata: Vec<(String, hearth_core::gguf::Value)> = header
        .metadata()
        .iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .cloned()
        .collect();
    metadata.extend(set.iter().map(|(k, v)| (k.to_string(), v.clone())));
    rewrite_metadata(gguf, &header, &metadata).expect("writing to memory")
}

/// Mangles `m` as the GGUF fuzz tests do: `flips` bytes, each at an offset drawn by `at`, become
/// a random byte, themselves with one bit flipped, or 0xff; then, one time in ten, `m` is cut
/// short at a random length.
pub fn mangle<R: rand::Rng>(
    rng: &mut R,
    m: &mut Vec<u8>,
    flips: usize,
    at: impl Fn(&mut R) -> usize,
) {
    use rand::RngExt;
    for _ in 0..flips {
        let i = at(rng);
        m[i] = match rng.random_range(0..3) {
            0 => rng.random(),
            1 => m[i] ^ (1 << rng.random_range(0..8)),
            _ => 0xff,
        };
    }
    if rng.random_bool(0.1) {
        m.truncate(rng.random_range(0..m.len()));
    }
}
