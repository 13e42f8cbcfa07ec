//! A model's weights held on the CPU in their file's block format, decoded a row at a time.

use std::collections::BTreeMap;
use std::ops::Range;

use super::cpu::ops::dot;
use super::cpu::products;
use super::shard::{Link, Peers, Request, Requests, Shard, MOST_PRODUCTS};
use super::spec::ModelSpec;
use super::tensor::{Role, TensorId, Use};
use super::ModelError;
use crate::gguf::{ByteSource, GgufFile, TensorInfo};
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

    /// Rows `first..first + n`, cut from this tensor's own buffer: no second copy is made
    /// while it is cut.
    pub fn into_rows(mut self, first: usize, n: usize) -> QTensor {
        let b = self.row_bytes();
        self.data.truncate((first + n) * b);
        self.data.drain(..first * b);
        self.data.shrink_to_fit();
        QTensor { rows: n, ..self }
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

/// Every tensor a model reads, by id: on a [`Shard`] of a split model, its rows of every
/// matrix but the table of learned positions (which is read a row at a time).
pub struct Weights {
    tensors: BTreeMap<TensorId, Tensor>,
    /// How the forward pass takes its products (fast unless set otherwise).
    pub products: Products,
    shard: Shard,
    /// The split matrices and their rows as a whole, in id order (their [`Request`] numbers).
    split: BTreeMap<TensorId, usize>,
    /// On the first shard of a split model: the others.
    peers: Option<Box<dyn Peers>>,
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
        Self::load_shard(file, spec, Shard::WHOLE, progress)
    }

    /// As [`Weights::load`], keeping `shard`'s rows of the matrices.
    pub fn load_shard<S: ByteSource>(
        file: &GgufFile<S>,
        spec: &ModelSpec,
        shard: Shard,
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
        let mut builder = WeightsBuilder::new(spec, shard);
        for (id, info) in infos {
            builder.add(id, info, file.tensor_bytes(info)?.into_owned());
            loaded += info.n_bytes;
            progress(loaded, total);
        }
        builder.finish()
    }

    fn get(&self, id: TensorId) -> Option<&Tensor> {
        self.tensors.get(&id)
    }

    /// Matrix `id` (this shard's rows of it); panics if the model does not read it (the spec
    /// decides what is loaded).
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

    /// The output head's product with `x`, taken as [`Weights::products`] says.
    pub async fn head_times(&self, spec: &ModelSpec, x: &[f32]) -> Vec<f32> {
        self.times(TensorId::global(spec.head), x, None).await
    }

    /// The shards this model is split into (1 when it is whole).
    pub fn shards(&self) -> usize {
        self.shard.count
    }

    /// The largest dimension of the split matrices: what [`Peers::capacity`] must hold.
    pub fn largest_split_dimension(&self) -> usize {
        self.split
            .iter()
            .map(|(id, &rows)| rows.max(self.matrix(*id).cols))
            .max()
            .unwrap_or(0)
    }

    /// Takes the other shards' rows of every product from now on (this must be shard 0 of a
    /// split model).
    pub fn set_peers(&mut self, peers: Box<dyn Peers>) {
        assert_eq!(self.shard.index, 0, "the first shard asks the others");
        assert!(peers.capacity() >= self.largest_split_dimension());
        self.peers = Some(peers);
    }

    /// Matrix `id`'s product with the `x.len() / cols` inputs in `x`, plus `bias`: on a split
    /// model, this shard's rows computed here while the other shards compute theirs.
    pub async fn times(&self, id: TensorId, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut out = self.times_each(&[(id, bias)], x).await;
        out.pop().expect("one product")
    }

    /// As [`Weights::times`] for matrices that take the same inputs (at most
    /// [`MOST_PRODUCTS`] of them): on a split model, in one request.
    pub async fn times_each(
        &self,
        products: &[(TensorId, Option<&[f32]>)],
        x: &[f32],
    ) -> Vec<Vec<f32>> {
        if !products.iter().all(|(id, _)| self.split.contains_key(id)) {
            let times = |&(id, bias)| self.matrix(id).times(x, bias, self.products);
            return products.iter().map(times).collect();
        }
        assert!(products.len() <= MOST_PRODUCTS);
        let mut tensors = [0; MOST_PRODUCTS];
        let mut peers = None;
        for (t, &(id, _)) in tensors.iter_mut().zip(products) {
            let (p, number) = self.peers_for(id);
            (*t, peers) = (number, Some(p));
        }
        let peers = peers.expect("at least one product");
        let rows: Vec<usize> = products.iter().map(|(id, _)| self.split[id]).collect();
        if products.len() > 1 && rows.iter().sum::<usize>() > peers.capacity() {
            // The areas hold each matrix's rows, not all of theirs at once.
            let mut outs = Vec::with_capacity(products.len());
            for &p in products {
                let mut one = Box::pin(self.times_each(&[p], x)).await;
                outs.push(one.pop().expect("one product"));
            }
            return outs;
        }
        let cols = self.matrix(products[0].0).cols;
        let n = x.len() / cols;
        let mut outs: Vec<Vec<f32>> = rows.iter().map(|r| vec![0.0; n * r]).collect();
        // As many inputs at a time as the areas hold.
        let per = (peers.capacity() / rows.iter().sum::<usize>().max(cols)).max(1);
        for first in (0..n).step_by(per) {
            let k = per.min(n - first);
            let request = Request::Products {
                tensors,
                count: products.len() as u32,
                n: k as u32,
            };
            let x = &x[first * cols..(first + k) * cols];
            peers.send(request, x);
            let local: Vec<Vec<f32>> = products
                .iter()
                .map(|&(id, _)| self.matrix(id).times(x, None, self.products))
                .collect();
            peers.wait().await;
            let mut at = 0;
            for ((out, &rows), local) in outs.iter_mut().zip(&rows).zip(&local) {
                let mine = self.shard.rows(rows);
                let out = &mut out[first * rows..(first + k) * rows];
                peers.read(at, out);
                at += out.len();
                for (o, l) in out
                    .chunks_exact_mut(rows)
                    .zip(local.chunks_exact(mine.len().max(1)))
                {
                    o[mine.clone()].copy_from_slice(l);
                }
            }
        }
        for (out, &(id, bias)) in outs.iter_mut().zip(products) {
            if let Some(b) = bias {
                for o in out.chunks_exact_mut(self.split[&id]) {
                    o.iter_mut().zip(b).for_each(|(o, b)| *o += b);
                }
            }
        }
        outs
    }

    /// Rows `ids` of matrix `id` (the token embedding's, for tokens `ids`) decoded one after
    /// another into `out`; the ids must be rows of the matrix.
    pub async fn rows_of(&self, id: TensorId, ids: &[u32], out: &mut [f32]) {
        let m = self.matrix(id);
        let cols = m.cols;
        let Some(&rows) = self.split.get(&id) else {
            for (&r, out) in ids.iter().zip(out.chunks_exact_mut(cols)) {
                m.row(r as usize, out);
            }
            return;
        };
        let (peers, tensor) = self.peers_for(id);
        let mine = self.shard.rows(rows);
        let per = (peers.capacity() / cols).max(1);
        for (ids, out) in ids.chunks(per).zip(out.chunks_mut(per * cols)) {
            let request = Request::Rows {
                tensor,
                n: ids.len() as u32,
            };
            let input: Vec<f32> = ids.iter().map(|&r| f32::from_bits(r)).collect();
            peers.send(request, &input);
            peers.wait().await;
            peers.read(0, out);
            for (&r, out) in ids.iter().zip(out.chunks_exact_mut(cols)) {
                if mine.contains(&(r as usize)) {
                    m.row(r as usize - mine.start, out);
                }
            }
        }
    }

    fn peers_for(&self, id: TensorId) -> (&dyn Peers, u32) {
        let peers = self
            .peers
            .as_deref()
            .expect("the first shard of a split model has its peers set");
        (peers, self.split.range(..id).count() as u32)
    }

    /// Answers the first shard's requests over `link` until it ends them (a shard other than
    /// the first).
    pub fn serve(&self, link: &dyn Requests) {
        while let Some(request) = link.receive() {
            self.answer(request, link);
            link.done();
        }
    }

    /// Answers one of the first shard's requests: reads its inputs from `link` and writes this
    /// shard's rows of the products there (a shard other than the first).
    pub fn answer(&self, request: Request, link: &dyn Link) {
        // Split matrix number `t` and its rows.
        let split = |t: u32| {
            let (&id, &rows) = self.split.iter().nth(t as usize).expect("a split matrix");
            (id, rows)
        };
        match request {
            Request::Products { tensors, count, n } => {
                let tensors = &tensors[..count as usize];
                let n = n as usize;
                let mut input = vec![0.0; n * self.matrix(split(tensors[0]).0).cols];
                link.input(&mut input);
                let mut at = 0;
                for &t in tensors {
                    let (id, rows) = split(t);
                    let mine = self.shard.rows(rows);
                    let local = self.matrix(id).times(&input, None, self.products);
                    for (t, l) in local.chunks_exact(mine.len().max(1)).enumerate() {
                        link.write(at + t * rows + mine.start, l);
                    }
                    at += n * rows;
                }
            }
            Request::Rows { tensor, n } => {
                let (id, rows) = split(tensor);
                let (m, mine) = (self.matrix(id), self.shard.rows(rows));
                let mut input = vec![0.0; n as usize];
                link.input(&mut input);
                let mut row = vec![0.0; m.cols];
                for (t, r) in input.iter().map(|r| r.to_bits() as usize).enumerate() {
                    if mine.contains(&r) {
                        m.row(r - mine.start, &mut row);
                        link.write(t * m.cols, &row);
                    }
                }
            }
        }
    }
}

/// Builds [`Weights`] from the tensors as their bytes arrive, in any order.
pub struct WeightsBuilder {
    spec: ModelSpec,
    shard: Shard,
    tensors: BTreeMap<TensorId, Tensor>,
    split: BTreeMap<TensorId, usize>,
}

impl WeightsBuilder {
    /// Weights of `spec`, keeping `shard`'s rows of the matrices.
    pub fn new(spec: &ModelSpec, shard: Shard) -> Self {
        WeightsBuilder {
            spec: spec.clone(),
            shard,
            tensors: BTreeMap::new(),
            split: BTreeMap::new(),
        }
    }

    /// Takes tensor `id`, of `info`'s type and shape (checked with
    /// [`ModelSpec::check_tensors`]), from its bytes.
    pub fn add(&mut self, id: TensorId, info: &TensorInfo, data: Vec<u8>) {
        let m = matrix_of(info, data);
        let tensor = match id.role.usage() {
            Use::Matrix => Tensor::Matrix(m),
            Use::Vector => Tensor::Vector(m.to_f32()),
        };
        let parts = match fused_parts(&self.spec, id) {
            Some(parts) => split(tensor, &parts),
            None => vec![(id, tensor)],
        };
        for (id, tensor) in parts {
            let tensor = match tensor {
                Tensor::Matrix(m) if self.splits(id) => {
                    self.split.insert(id, m.rows);
                    let mine = self.shard.rows(m.rows);
                    Tensor::Matrix(m.into_rows(mine.start, mine.len()))
                }
                tensor => tensor,
            };
            self.tensors.insert(id, tensor);
        }
    }

    /// The bytes of tensor `id` (of `info`'s shape) that this shard keeps, from the tensor's
    /// start, one range after another; `None` where it keeps them all.
    pub fn kept_bytes(&self, id: TensorId, info: &TensorInfo) -> Option<Vec<Range<u64>>> {
        let rows = (info.n_elements() / info.dims[0].max(1)) as usize;
        if !self.splits(id) || rows == 0 {
            return None;
        }
        let row = info.n_bytes / rows as u64;
        let parts = self.parts(id, rows);
        let mut first = 0;
        let ranges = parts.iter().map(|&(_, n)| {
            let mine = self.shard.rows(n);
            let r = (first + mine.start) as u64 * row..(first + mine.end) as u64 * row;
            first += n;
            r
        });
        Some(ranges.collect())
    }

    /// As [`WeightsBuilder::add`], from the bytes [`WeightsBuilder::kept_bytes`] names only.
    pub fn add_kept(&mut self, id: TensorId, info: &TensorInfo, data: Vec<u8>) {
        let m = matrix_of(info, data);
        let (row, parts) = (m.row_bytes(), self.parts(id, m.rows));
        if let [(id, n)] = parts[..] {
            self.split.insert(id, n);
            let rows = self.shard.rows(n).len();
            self.tensors
                .insert(id, Tensor::Matrix(QTensor { rows, ..m }));
            return;
        }
        let mut at = 0;
        for (id, n) in parts {
            let mine = self.shard.rows(n).len();
            let data = m.data[at..at + mine * row].to_vec();
            at += mine * row;
            self.split.insert(id, n);
            let part = QTensor {
                rows: mine,
                data,
                ..m
            };
            self.tensors.insert(id, Tensor::Matrix(part));
        }
    }

    /// Whether this shard keeps only some rows of matrix `id`.
    fn splits(&self, id: TensorId) -> bool {
        self.shard.count > 1 && id.role.usage() == Use::Matrix && id.role != Role::PositionEmbd
    }

    /// The tensors that `id` (of `rows` rows) is read as, with their rows.
    fn parts(&self, id: TensorId, rows: usize) -> Vec<(TensorId, usize)> {
        fused_parts(&self.spec, id).unwrap_or_else(|| vec![(id, rows)])
    }

    /// The tensors `spec` reads, by file name.
    pub fn names(&self) -> Vec<(String, TensorId)> {
        let ids = self.spec.expected_tensors().into_iter();
        ids.map(|(id, _)| (id.name(), id)).collect()
    }

    /// The weights, once every tensor is in.
    pub fn finish(self) -> Result<Weights, ModelError> {
        for (id, _) in self.spec.expected_tensors() {
            let parts = fused_parts(&self.spec, id).unwrap_or_else(|| vec![(id, 0)]);
            if parts.iter().any(|(id, _)| !self.tensors.contains_key(id)) {
                return Err(ModelError::MissingTensor(id.name()));
            }
        }
        Ok(Weights {
            tensors: self.tensors,
            products: Products::default(),
            shard: self.shard,
            split: self.split,
            peers: None,
        })
    }
}

/// Tensor `info`'s bytes as a matrix of its shape (rows of `dims[0]` values).
fn matrix_of(info: &TensorInfo, data: Vec<u8>) -> QTensor {
    QTensor {
        ty: info.ty,
        rows: (info.n_elements() / info.dims[0].max(1)) as usize,
        cols: info.dims[0] as usize,
        data,
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

    /// Matrix `role`'s product with `x`, plus `bias`, as [`Weights::times`].
    pub async fn times(self, role: Role, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        self.w
            .times(TensorId::layer(self.layer, role), x, bias)
            .await
    }

    /// The products of matrices `roles` with the same `x`, each plus its bias, as
    /// [`Weights::times_each`].
    pub async fn times_each<const N: usize>(
        self,
        roles: [(Role, Option<&[f32]>); N],
        x: &[f32],
    ) -> [Vec<f32>; N] {
        let products = roles.map(|(role, bias)| (TensorId::layer(self.layer, role), bias));
        let out = self.w.times_each(&products, x).await;
        out.try_into().expect("a product per matrix")
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
