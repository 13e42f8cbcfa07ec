//! Where a model's weights go: buffers made from the header alone, each noted with the tensor
//! that fills it ([`Pending`]), so weights can stream in later, in any order.

use std::collections::BTreeMap;

use hearth_core::gguf::{Gguf, TensorInfo};
use hearth_core::model::{ModelError, Role, Rope, TensorId};
use hearth_core::quant::GgmlType;

use crate::kernels;
use crate::weights::GpuMatrix;
use crate::{Gpu, GpuError};

/// Where a tensor's bytes go once they arrive.
pub enum Target {
    /// Repacked into a matrix's buffers.
    Matrix(GpuMatrix),
    /// Rows dealt in turn to several matrices, `block` rows at a time (a gated Q's query and
    /// gate rows, which alternate per head).
    Dealt { block: usize, parts: Vec<GpuMatrix> },
    /// Consecutive row ranges, each into its own matrix (a fused Q, K and V projection).
    Split(Vec<GpuMatrix>),
    /// Dequantized to f32 and cut into consecutive runs, each into its own buffer, as (buffer,
    /// floats) (a fused Q, K and V bias).
    SplitVector(Vec<(wgpu::Buffer, usize)>),
    /// Dequantized to f32 at a float offset of a buffer.
    Vector { buffer: wgpu::Buffer, offset: usize },
    /// Rope frequency factors (Llama 3's, LongRoPE's), which shape these rope tables: none for
    /// the LongRoPE set that this context does not take.
    RopeTables(Vec<(Rope, wgpu::Buffer)>),
}

/// A tensor whose buffers exist but whose bytes have not been written yet.
pub struct Pending {
    pub ty: GgmlType,
    pub n_elements: usize,
    pub n_bytes: u64,
    pub target: Target,
}

/// A norm's weight, followed by its bias where it has one: a LayerNorm's, which also centres
/// its rows (the CPU likewise decides by the bias).
#[derive(Clone)]
pub(super) struct NormWeights {
    pub(super) buffer: wgpu::Buffer,
    pub(super) centred: bool,
}

/// Allocates buffers, counts the bytes they hold, and notes which tensor fills which.
pub(super) struct Held<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) header: &'a Gguf,
    pub(super) bytes: u64,
    pub(super) matrix_bytes: u64,
    pub(super) pending: BTreeMap<String, Pending>,
}

impl<'a> Held<'a> {
    pub(super) fn buffer(&mut self, b: wgpu::Buffer) -> wgpu::Buffer {
        self.bytes += b.size();
        b
    }

    pub(super) fn f32s(&mut self, v: &[f32]) -> wgpu::Buffer {
        let b = kernels::storage_f32(self.gpu, v);
        self.buffer(b)
    }

    pub(super) fn scratch(&mut self, n: usize) -> wgpu::Buffer {
        let b = kernels::scratch(self.gpu, n);
        self.buffer(b)
    }

    pub(super) fn info(&self, id: TensorId) -> Result<&'a TensorInfo, GpuError> {
        let name = id.name();
        Ok(self
            .header
            .tensor(&name)
            .ok_or(ModelError::MissingTensor(name))?)
    }

    /// Notes that tensor `id` fills `target`.
    pub(super) fn expect(&mut self, id: TensorId, target: Target) -> Result<(), GpuError> {
        let info = self.info(id)?;
        let pending = Pending {
            ty: info.ty,
            n_elements: info.n_elements() as usize,
            n_bytes: info.n_bytes,
            target,
        };
        self.pending.insert(id.name(), pending);
        Ok(())
    }

    pub(super) fn shape(&self, id: TensorId) -> Result<(usize, usize, GgmlType), GpuError> {
        let info = self.info(id)?;
        let cols = info.dims[0] as usize;
        Ok((
            (info.n_elements() / info.dims[0].max(1)) as usize,
            cols,
            info.ty,
        ))
    }

    pub(super) fn allocate(
        &mut self,
        id: TensorId,
        rows: usize,
        cols: usize,
        ty: GgmlType,
    ) -> Result<GpuMatrix, GpuError> {
        let m = GpuMatrix::allocate(self.gpu, &id.name(), ty, rows, cols)?;
        self.bytes += m.bytes();
        self.matrix_bytes += m.bytes();
        Ok(m)
    }

    /// A weight matrix, to be filled with tensor `id`.
    pub(super) fn matrix(&mut self, id: TensorId) -> Result<GpuMatrix, GpuError> {
        let (rows, cols, ty) = self.shape(id)?;
        let m = self.allocate(id, rows, cols, ty)?;
        self.expect(id, Target::Matrix(m.clone()))?;
        Ok(m)
    }

    /// Layer `l`'s matrices of `roles`, in order.
    pub(super) fn matrices<const N: usize>(
        &mut self,
        l: usize,
        roles: [Role; N],
    ) -> Result<[GpuMatrix; N], GpuError> {
        let ms = roles
            .iter()
            .map(|&r| self.matrix(TensorId::layer(l, r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ms
            .try_into()
            .unwrap_or_else(|_| unreachable!("one matrix per role")))
    }

    /// `n` matrices dealt the rows of tensor `id` in turn, `block` rows each time.
    pub(super) fn dealt(
        &mut self,
        id: TensorId,
        block: usize,
        n: usize,
    ) -> Result<Vec<GpuMatrix>, GpuError> {
        let (rows, cols, ty) = self.shape(id)?;
        let parts = (0..n)
            .map(|_| self.allocate(id, rows / n, cols, ty))
            .collect::<Result<Vec<_>, _>>()?;
        self.expect(
            id,
            Target::Dealt {
                block,
                parts: parts.clone(),
            },
        )?;
        Ok(parts)
    }

    /// Matrices of consecutive row ranges of tensor `id`, `rows[i]` rows each (which the
    /// checked tensor shape covers).
    pub(super) fn split<const N: usize>(
        &mut self,
        id: TensorId,
        rows: [usize; N],
    ) -> Result<[GpuMatrix; N], GpuError> {
        let (_, cols, ty) = self.shape(id)?;
        let parts = rows.map(|n| self.allocate(id, n, cols, ty));
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        self.expect(id, Target::Split(parts.clone()))?;
        Ok(parts
            .try_into()
            .unwrap_or_else(|_| unreachable!("one matrix per range")))
    }

    /// f32 vectors of consecutive runs of tensor `id`, `lens[i]` values each.
    pub(super) fn split_vector<const N: usize>(
        &mut self,
        id: TensorId,
        lens: [usize; N],
    ) -> Result<[wgpu::Buffer; N], GpuError> {
        let parts = lens.map(|n| (self.scratch(n), n));
        self.expect(id, Target::SplitVector(parts.to_vec()))?;
        Ok(parts.map(|(b, _)| b))
    }

    /// Norm `weight` as f32s, followed by its `bias` where it has one (LayerNorm), as the
    /// norm kernel reads them.
    pub(super) fn norm(
        &mut self,
        weight: TensorId,
        bias: Option<TensorId>,
    ) -> Result<NormWeights, GpuError> {
        let n = self.info(weight)?.n_elements() as usize;
        let buffer = self.scratch(if bias.is_some() { 2 * n } else { n });
        self.vector_at(weight, &buffer, 0)?;
        if let Some(bias) = bias {
            self.vector_at(bias, &buffer, n)?;
        }
        Ok(NormWeights {
            buffer,
            centred: bias.is_some(),
        })
    }

    /// An f32 vector, to be filled with tensor `id`.
    pub(super) fn vector(&mut self, id: TensorId) -> Result<wgpu::Buffer, GpuError> {
        let b = self.scratch(self.info(id)?.n_elements() as usize);
        self.vector_at(id, &b, 0)?;
        Ok(b)
    }

    /// Tensor `id` as f32s at float `offset` of `buffer`.
    pub(super) fn vector_at(
        &mut self,
        id: TensorId,
        buffer: &wgpu::Buffer,
        offset: usize,
    ) -> Result<(), GpuError> {
        let target = Target::Vector {
            buffer: buffer.clone(),
            offset,
        };
        self.expect(id, target)
    }
}
