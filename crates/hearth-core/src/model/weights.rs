//! A model's weights held on the CPU in their file's block format, decoded a row at a time.

use std::collections::BTreeMap;

use super::cpu::ops::dot;
use super::cpu::products;
use super::spec::ModelSpec;
use super::tensor::{Role, TensorId, Use};
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

    /// Rows `first..first + n` as a tensor of their own.
    pub fn rows(&self, first: usize, n: usize) -> QTensor {
        let b = self.row_bytes();
        QTensor {
            rows: n,
            data: self.data[first * b..(first + n) * b].to_vec(),
            ..*self
        }
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

    /// The product of the `x.len() / cols` inputs taken as `products` says, into a new
    /// vector (see [`QTensor::matmul`]).
    pub fn times(&self, x: &[f32], bias: Option<&[f32]>, products: Products) -> Vec<f32> {
        let mut out = vec![0.0; x.len() / self.cols * self.rows];
        match products {
            Products::Fast => self.matmul(x, bias, &mut out),
            Products::Reference => self.matmul_reference(x, bias, &mut out),
        }
        out
    }

    /// `out[t][r] = dot(row r, x[t])` for each of the `x.len() / cols` inputs `x[t]`, plus
    /// `bias[r]` when given: with integer dot products against the inputs quantized to 8 bits
    /// where the format has a fast kernel (see [`products`]), else as
    /// [`QTensor::matmul_reference`].
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        match products::decoding(self.ty) {
            Some(decoding) => {
                products::matmul(decoding, &self.data, (self.rows, self.cols), x, bias, out)
            }
            None => self.matmul_reference(x, bias, out),
        }
    }

    /// The oracle of [`QTensor::matmul`]: each row decoded to f32 (once for all inputs) and
    /// dotted with each input in f32.
    pub fn matmul_reference(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
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

/// How the CPU takes a matrix's products with its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    /// [`QTensor::matmul`]: integer dot products where the format has a fast kernel.
    #[default]
    Fast,
    /// [`QTensor::matmul_reference`] for every matrix: f32 throughout.
    Reference,
}

/// A tensor as the CPU holds it (see [`Use`]).
pub enum Tensor {
    Matrix(QTensor),
    Vector(Vec<f32>),
}

/// Every tensor a model reads, by id.
pub struct Weights {
    tensors: BTreeMap<TensorId, Tensor>,
    /// How the forward pass takes its products (fast unless set otherwise).
    pub products: Products,
}

impl Weights {
    /// Loads every tensor `spec` needs, in file order; `progress(loaded, total)` follows the
    /// bytes read. The tensors' shapes and types must have been checked with
    /// [`ModelSpec::check_tensors`].
    pub fn load<S: ByteSource>(
        file: &GgufFile<S>,
        spec: &ModelSpec,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let mut infos = Vec::new();
        for (id, _) in spec.expected_tensors() {
            let name = id.name();
            let info = file
                .header
                .tensor(&name)
                .ok_or(ModelError::MissingTensor(name))?;
            infos.push((id, info));
        }
        infos.sort_by_key(|(_, info)| info.offset);
        let total = infos.iter().map(|(_, t)| t.n_bytes).sum();
        let mut loaded = 0;
        let mut tensors = BTreeMap::new();
        for (id, info) in infos {
            let data = file.tensor_bytes(info)?.into_owned();
            loaded += info.n_bytes;
            progress(loaded, total);
            let cols = info.dims[0] as usize;
            let m = QTensor {
                ty: info.ty,
                rows: (info.n_elements() / info.dims[0].max(1)) as usize,
                cols,
                data,
            };
            let tensor = match id.role.usage() {
                Use::Matrix => Tensor::Matrix(m),
                Use::Vector => Tensor::Vector(m.to_f32()),
            };
            match fused_parts(spec, id) {
                Some(parts) => tensors.extend(split(tensor, &parts)),
                None => {
                    tensors.insert(id, tensor);
                }
            }
        }
        Ok(Weights {
            tensors,
            products: Products::default(),
        })
    }

    fn get(&self, id: TensorId) -> Option<&Tensor> {
        self.tensors.get(&id)
    }

    /// Matrix `id`; panics if the model does not read it (the spec decides what is loaded).
    pub fn matrix(&self, id: TensorId) -> &QTensor {
        match self.get(id) {
            Some(Tensor::Matrix(m)) => m,
            _ => panic!("{} is not a loaded matrix", id.name()),
        }
    }

    /// Vector `id`, if the model reads it.
    pub fn vector(&self, id: TensorId) -> Option<&[f32]> {
        match self.get(id) {
            Some(Tensor::Vector(v)) => Some(v),
            _ => None,
        }
    }

    /// Layer `layer`'s tensors.
    pub fn layer(&self, layer: usize) -> LayerWeights<'_> {
        LayerWeights { w: self, layer }
    }

    /// The output head: `output.weight`, or the token embedding when tied.
    pub fn head(&self, spec: &ModelSpec) -> &QTensor {
        self.matrix(TensorId::global(spec.head))
    }

    /// The output head's product with `x`, taken as [`Weights::products`] says.
    pub fn head_times(&self, spec: &ModelSpec, x: &[f32]) -> Vec<f32> {
        self.head(spec).times(x, None, self.products)
    }
}

/// The tensors a fused tensor is split into at load, each with its rows (values of a vector),
/// in order: the Q, K and V of a fused attention projection or of its bias, or the gate and up
/// of a fused feed-forward block.
fn fused_parts(spec: &ModelSpec, id: TensorId) -> Option<Vec<(TensorId, usize)>> {
    let l = id.layer?;
    if id.role == Role::FfnUp {
        let parts = spec.layers[l].ffn.fused_parts()?;
        return Some(
            parts
                .map(|(role, n)| (TensorId::layer(l, role), n))
                .to_vec(),
        );
    }
    let a = spec.layers[l].attention().filter(|a| a.fused_qkv)?;
    let bias = match id.role {
        Role::AttnQkv => false,
        Role::AttnQkvBias => true,
        _ => return None,
    };
    let part = |(weight, b, n)| (TensorId::layer(l, if bias { b } else { weight }), n);
    Some(a.fused_qkv_parts().map(part).to_vec())
}

/// `tensor` cut into consecutive `parts` (checked to cover it when its shape was).
fn split(tensor: Tensor, parts: &[(TensorId, usize)]) -> Vec<(TensorId, Tensor)> {
    let mut first = 0;
    parts
        .iter()
        .map(|&(id, n)| {
            let part = match &tensor {
                Tensor::Matrix(m) => Tensor::Matrix(m.rows(first, n)),
                Tensor::Vector(v) => Tensor::Vector(v[first..first + n].to_vec()),
            };
            first += n;
            (id, part)
        })
        .collect()
}

/// The tensors of one layer, by role.
#[derive(Clone, Copy)]
pub struct LayerWeights<'a> {
    w: &'a Weights,
    layer: usize,
}

impl<'a> LayerWeights<'a> {
    pub fn matrix(self, role: Role) -> &'a QTensor {
        self.w.matrix(TensorId::layer(self.layer, role))
    }

    /// Vector `role`; panics if the layer has none (optional ones: [`Self::optional`]).
    pub fn vector(self, role: Role) -> &'a [f32] {
        self.optional(role)
            .unwrap_or_else(|| panic!("{} is not loaded", TensorId::layer(self.layer, role).name()))
    }

    pub fn optional(self, role: Role) -> Option<&'a [f32]> {
        self.w.vector(TensorId::layer(self.layer, role))
    }

    /// Matrix `role`'s product with `x`, plus `bias`, taken as [`Weights::products`] says.
    pub fn times(self, role: Role, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        self.matrix(role).times(x, bias, self.w.products)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fused_tensor_splits_into_consecutive_rows() {
        let values: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let m = QTensor {
            ty: GgmlType::F32,
            rows: 6,
            cols: 2,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let parts = [(Role::AttnQ, 2), (Role::AttnK, 3), (Role::AttnV, 1)]
            .map(|(r, n)| (TensorId::layer(0, r), n));
        let got: Vec<Vec<f32>> = split(Tensor::Matrix(m), &parts)
            .into_iter()
            .map(|(_, t)| match t {
                Tensor::Matrix(m) => m.to_f32(),
                Tensor::Vector(_) => panic!("a matrix splits into matrices"),
            })
            .collect();
        assert_eq!(got, [&values[..4], &values[4..10], &values[10..]]);

        let bias = Tensor::Vector(values[..6].to_vec());
        let got: Vec<Vec<f32>> = split(bias, &parts)
            .into_iter()
            .map(|(_, t)| match t {
                Tensor::Vector(v) => v,
                Tensor::Matrix(_) => panic!("a vector splits into vectors"),
            })
            .collect();
        assert_eq!(got, [&values[..2], &values[2..5], &values[5..6]]);
    }
}
