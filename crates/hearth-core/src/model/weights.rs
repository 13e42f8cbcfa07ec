//! A model's weights held on the CPU in their file's block format, decoded a row at a time.

use super::arch::names;
use super::spec::ModelSpec;
use super::ModelError;
use crate::gguf::{ByteSource, GgufFile};
use crate::quant::{dequantize, GgmlType};

/// A matrix (or vector) in its GGUF block format: `rows` rows of `cols` values each.
#[derive(Clone, Debug)]
pub struct QTensor {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl QTensor {
    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.block_geometry().1
    }

    /// Decodes row `r` into `out` (`cols` values).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        let n = self.row_bytes();
        dequantize(self.ty, &self.data[r * n..(r + 1) * n], out)
            .expect("tensor shape and type were checked at load");
    }

    /// The whole tensor as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row(r, row);
        }
        out
    }

    /// `out[t][r] = dot(row r, x[t])` for each of the `x.len() / cols` inputs `x[t]`, plus
    /// `bias[r]` when given. Each row is decoded once for all inputs.
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let n = x.len() / self.cols;
        debug_assert_eq!(out.len(), n * self.rows);
        let mut row = vec![0.0; self.cols];
        for r in 0..self.rows {
            self.row(r, &mut row);
            let b = bias.map_or(0.0, |b| b[r]);
            for t in 0..n {
                out[t * self.rows + r] = dot(&row, &x[t * self.cols..(t + 1) * self.cols]) + b;
            }
        }
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: QTensor,
    pub wk: QTensor,
    pub wv: QTensor,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: QTensor,
    pub ffn_norm: Vec<f32>,
    pub w_gate: QTensor,
    pub w_up: QTensor,
    pub w_down: QTensor,
}

pub struct Weights {
    pub token_embd: QTensor,
    pub output_norm: Vec<f32>,
    /// `None` when tied to `token_embd`.
    pub output: Option<QTensor>,
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

/// Reads tensors from a file, reporting bytes read so far against the total.
struct Loader<'a, S> {
    file: &'a GgufFile<S>,
    loaded: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<S: ByteSource> Loader<'_, S> {
    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        let info = self
            .file
            .header
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let data = self.file.tensor_bytes(info)?.into_owned();
        self.loaded += info.n_bytes;
        (self.progress)(self.loaded, self.total);
        let cols = info.dims[0] as usize;
        let rows = (info.n_elements() / info.dims[0].max(1)) as usize;
        Ok(QTensor {
            ty: info.ty,
            rows,
            cols,
            data,
        })
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>, ModelError> {
        Ok(self.tensor(name)?.to_f32())
    }

    fn optional_vector(
        &mut self,
        present: bool,
        name: &str,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        present.then(|| self.vector(name)).transpose()
    }
}

impl Weights {
    /// Loads every tensor `spec` needs; `progress(loaded, total)` follows the bytes read.
    /// The tensors' shapes and types must have been checked with [`ModelSpec::check_tensors`].
    pub fn load<S: ByteSource>(
        file: &GgufFile<S>,
        spec: &ModelSpec,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let total = spec
            .expected_tensors()
            .iter()
            .filter_map(|(name, _)| file.header.tensor(name))
            .map(|t| t.n_bytes)
            .sum();
        let mut ld = Loader {
            file,
            loaded: 0,
            total,
            progress,
        };
        let token_embd = ld.tensor(names::TOKEN_EMBD)?;
        let output_norm = ld.vector(names::OUTPUT_NORM)?;
        let output = (!spec.tied_output)
            .then(|| ld.tensor(names::OUTPUT))
            .transpose()?;
        let rope_freqs = ld.optional_vector(spec.has_rope_freqs, names::ROPE_FREQS)?;
        let mut layers = Vec::with_capacity(spec.n_layer);
        for l in 0..spec.n_layer {
            let n = |what: &str| names::layer(l, what);
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"))?,
                wq: ld.tensor(&n("attn_q.weight"))?,
                wk: ld.tensor(&n("attn_k.weight"))?,
                wv: ld.tensor(&n("attn_v.weight"))?,
                bq: ld.optional_vector(spec.has_qkv_bias, &n("attn_q.bias"))?,
                bk: ld.optional_vector(spec.has_qkv_bias, &n("attn_k.bias"))?,
                bv: ld.optional_vector(spec.has_qkv_bias, &n("attn_v.bias"))?,
                q_norm: ld.optional_vector(spec.has_qk_norm, &n("attn_q_norm.weight"))?,
                k_norm: ld.optional_vector(spec.has_qk_norm, &n("attn_k_norm.weight"))?,
                wo: ld.tensor(&n("attn_output.weight"))?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"))?,
                w_gate: ld.tensor(&n("ffn_gate.weight"))?,
                w_up: ld.tensor(&n("ffn_up.weight"))?,
                w_down: ld.tensor(&n("ffn_down.weight"))?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
        })
    }

    /// The output head: `output.weight`, or the token embedding when tied.
    pub fn head(&self) -> &QTensor {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}
