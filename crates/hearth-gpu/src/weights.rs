//! Weight matrices in GPU buffers, repacked from GGUF blocks at load time.
//!
//! GGUF's legacy blocks are 18, 20, 22 or 34 bytes, so their quants sit at odd offsets and a
//! shader would assemble every word from two. A format whose row in hearth-core's table
//! (`hearth_core::quant::FORMATS`) says its scales move is therefore split into a word-aligned
//! body and a scale word in a region after all bodies. The kernels then read the quants as
//! whole u32s, consecutive threads read consecutive bodies, and the byte count read per token
//! stays within 1/16 of the file's. Other formats keep their blocks as they are, rows padded to
//! a whole word. A matrix larger than one storage binding is split by rows into several buffers.

use std::ops::Range;

use hearth_core::quant::{dequantize, GgmlType, OnGpu};

use crate::{Gpu, GpuError};

/// The type a tensor has on the GPU and the WGSL function that decodes its blocks
/// (`unit_{name}` in quant.wgsl), from its row in the format table: its own, or F32's for a
/// type decoded to F32 as it is uploaded (BF16, exactly).
pub fn gpu_decoder(ty: GgmlType) -> Result<(GgmlType, &'static str), GpuError> {
    match ty.codec().map(|c| c.gpu) {
        Some(OnGpu::Unit { wgsl, .. }) => Ok((ty, wgsl)),
        Some(OnGpu::AsF32) => gpu_decoder(GgmlType::F32),
        None => Err(GpuError::UnsupportedType(ty)),
    }
}

/// The type a tensor has on the GPU (see [`gpu_decoder`]).
pub fn gpu_format(ty: GgmlType) -> Result<GgmlType, GpuError> {
    Ok(gpu_decoder(ty)?.0)
}

/// Byte ranges of a block of GPU format `ty` that go to the body region and to the scale word.
fn block_split(ty: GgmlType) -> (Range<usize>, Option<Range<usize>>) {
    match ty.codec().filter(|c| c.scales_move()) {
        Some(c) => (c.body.clone(), Some(c.scales.clone())),
        None => (0..ty.block_geometry().1, None),
    }
}

/// One buffer of a matrix: `rows` rows starting at row `row_offset`.
#[derive(Clone)]
pub struct Part {
    pub buffer: wgpu::Buffer,
    pub rows: usize,
    pub row_offset: usize,
    pub row_words: usize,
    pub scale_base: usize,
}

/// A `rows` x `cols` matrix on the GPU, in one or more row ranges.
#[derive(Clone)]
pub struct GpuMatrix {
    /// The format the kernels decode (see [`gpu_format`]).
    pub ty: GgmlType,
    /// The tensor's type in the file.
    pub file_ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub parts: Vec<Part>,
}

/// How one row of a tensor of type `ty` lies on the GPU: (body words, has scale words). Bodies
/// of several values are whole words (the format table checks it); plain floats pack a row.
fn row_shape(ty: GgmlType, cols: usize) -> (usize, bool) {
    let (body, scale) = block_split(ty);
    (
        (cols / ty.block_size() * body.len()).div_ceil(4),
        scale.is_some(),
    )
}

/// Repacks `rows` whole rows of GGUF data (type `ty`, already the GPU format) into words.
fn repack(ty: GgmlType, cols: usize, rows: usize, data: &[u8]) -> (Vec<u8>, usize) {
    let (row_words, _) = row_shape(ty, cols);
    let (values, block_bytes) = ty.block_geometry();
    match block_split(ty) {
        (_, None) => {
            let src_row = cols / values * block_bytes;
            if src_row == row_words * 4 {
                return (data.to_vec(), 0);
            }
            let mut out = vec![0u8; rows * row_words * 4];
            for (src, dst) in data
                .chunks_exact(src_row)
                .zip(out.chunks_exact_mut(row_words * 4))
            {
                dst[..src.len()].copy_from_slice(src);
            }
            (out, 0)
        }
        (body, Some(scale)) => {
            let scale_base = rows * row_words;
            let mut out = vec![0u8; (scale_base + rows * cols / values) * 4];
            for (i, b) in data.chunks_exact(block_bytes).enumerate() {
                let at = i * body.len();
                out[at..at + body.len()].copy_from_slice(&b[body.clone()]);
                let at = (scale_base + i) * 4;
                out[at..at + scale.len()].copy_from_slice(&b[scale.clone()]);
            }
            (out, scale_base)
        }
    }
}

impl GpuMatrix {
    /// Uploads a `rows` x `cols` tensor of type `ty` from its GGUF bytes, split by rows into
    /// buffers no larger than the device's binding limit. `label` names it in errors.
    pub fn upload(
        gpu: &Gpu,
        label: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, GpuError> {
        let m = Self::allocate(gpu, label, ty, rows, cols)?;
        m.write(gpu, data)?;
        Ok(m)
    }

    /// Makes the (zeroed) buffers of a `rows` x `cols` tensor of type `ty`, to be filled by
    /// [`GpuMatrix::write`] once its bytes arrive.
    pub fn allocate(
        gpu: &Gpu,
        label: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, GpuError> {
        let gty = gpu_format(ty)?;
        let (row_words, scaled) = row_shape(gty, cols);
        let scale_words = if scaled { cols / gty.block_size() } else { 0 };
        let row_bytes = (row_words + scale_words) * 4;
        let per_part = (gpu.max_binding as usize / row_bytes.max(1)).min(rows.max(1));
        if per_part == 0 {
            return Err(GpuError::TooLarge {
                what: format!("a row of {label}"),
                bytes: row_bytes as u64,
                limit: gpu.max_binding,
            });
        }
        let mut parts = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = per_part.min(rows - start);
            let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                // Whole vec4s: the kernels read the words as array<vec4<u32>>.
                size: (n * row_bytes).max(16).next_multiple_of(16) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            parts.push(Part {
                buffer,
                rows: n,
                row_offset: start,
                row_words,
                scale_base: if scaled { n * row_words } else { 0 },
            });
            start += n;
        }
        Ok(GpuMatrix {
            ty: gty,
            file_ty: ty,
            rows,
            cols,
            parts,
        })
    }

    /// Bytes of the tensor in its GGUF type.
    pub fn file_bytes(&self) -> u64 {
        (self.rows * self.cols / self.file_ty.block_size() * self.file_ty.block_geometry().1) as u64
    }

    /// Repacks the tensor's GGUF bytes into its buffers (queued writes).
    pub fn write(&self, gpu: &Gpu, data: &[u8]) -> Result<(), GpuError> {
        if data.len() as u64 != self.file_bytes() {
            return Err(GpuError::TensorSize {
                got: data.len() as u64,
                want: self.file_bytes(),
            });
        }
        let decoded;
        let data = if self.ty != self.file_ty {
            // A type the GPU holds as F32.
            let mut values = vec![0.0f32; self.rows * self.cols];
            dequantize(self.file_ty, data, &mut values).expect("the byte count was checked");
            decoded = values;
            bytemuck::cast_slice(&decoded)
        } else {
            data
        };
        let src_row_bytes = data.len() / self.rows.max(1);
        for part in &self.parts {
            let src = &data
                [part.row_offset * src_row_bytes..(part.row_offset + part.rows) * src_row_bytes];
            let (bytes, scale_base) = repack(self.ty, self.cols, part.rows, src);
            debug_assert_eq!(scale_base, part.scale_base);
            gpu.queue.write_buffer(&part.buffer, 0, &bytes);
        }
        Ok(())
    }

    /// Bytes held on the GPU, which is also what one product reads.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }
}
