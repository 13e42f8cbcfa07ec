//! Writing GGUF version 3 files, streaming tensor data one tensor at a time.

use std::io::{self, Write};

use super::value::{Array, Value};
use super::{Gguf, TensorInfo};
use crate::quant::GgmlType;

/// A tensor's entry in the index of a file being written; its bytes come later.
#[derive(Clone, Debug)]
pub struct TensorToWrite {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl From<&TensorInfo> for TensorToWrite {
    fn from(t: &TensorInfo) -> Self {
        TensorToWrite {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        }
    }
}

impl TensorToWrite {
    fn n_bytes(&self) -> io::Result<u64> {
        let elements = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        elements.and_then(|e| self.ty.bytes_for(e)).ok_or_else(|| {
            invalid(format!(
                "tensor {:?}: {:?} is not whole {} blocks",
                self.name, self.dims, self.ty
            ))
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn put_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn put_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => put_str(w, s),
        Value::Array(a) => put_array(w, a),
    }
}

fn put_array(w: &mut impl Write, a: &Array) -> io::Result<()> {
    w.write_all(&a.elem_tag().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each_le {
        ($v:expr) => {
            $v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        };
    }
    match a {
        Array::U8(v) => w.write_all(v),
        Array::I8(v) => each_le!(v),
        Array::U16(v) => each_le!(v),
        Array::I16(v) => each_le!(v),
        Array::U32(v) => each_le!(v),
        Array::I32(v) => each_le!(v),
        Array::U64(v) => each_le!(v),
        Array::I64(v) => each_le!(v),
        Array::F32(v) => each_le!(v),
        Array::F64(v) => each_le!(v),
        Array::Bool(v) => v.iter().try_for_each(|&b| w.write_all(&[u8::from(b)])),
        Array::String(v) => v.iter().try_for_each(|s| put_str(w, s)),
        Array::Array(v) => v.iter().try_for_each(|inner| put_array(w, inner)),
    }
}

/// A writer that counts the bytes it passes on, to place padding.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counted<W> {
    fn pad_to(&mut self, alignment: u64) -> io::Result<()> {
        let pad = self.written.next_multiple_of(alignment) - self.written;
        self.write_all(&vec![0u8; pad as usize])
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a GGUF v3 file: `metadata` in order, then the index of `tensors`, then each tensor's
/// bytes as `data_of(i)` returns them, aligned to `general.alignment` (32 when absent).
pub fn write_gguf<E: From<io::Error>>(
    out: impl Write,
    metadata: &[(String, Value)],
    tensors: &[TensorToWrite],
    mut data_of: impl FnMut(usize) -> Result<Vec<u8>, E>,
) -> Result<(), E> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
            invalid(format!(
                "general.alignment {} is not a power of two",
                v.summary()
            ))
        })?,
    };
    let mut w = Counted {
        inner: out,
        written: 0,
    };
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (key, value) in metadata {
        put_str(&mut w, key)?;
        w.write_all(&value.tag().to_le_bytes())?;
        put_value(&mut w, value)?;
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        put_str(&mut w, &t.name)?;
        w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
        t.dims
            .iter()
            .try_for_each(|d| w.write_all(&d.to_le_bytes()))?;
        w.write_all(&t.ty.id().to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        let n = t.n_bytes()?;
        sizes.push(n);
        offset = (offset + n).next_multiple_of(alignment);
    }
    for (i, (t, &n)) in tensors.iter().zip(&sizes).enumerate() {
        w.pad_to(alignment)?;
        let data = data_of(i)?;
        if data.len() as u64 != n {
            return Err(invalid(format!(
                "tensor {:?}: {} bytes given, {n} expected",
                t.name,
                data.len()
            ))
            .into());
        }
        w.write_all(&data)?;
    }
    w.flush()?;
    Ok(())
}

/// The GGUF `file`, whose parsed header is `header`, with `metadata` in place of its own: the
/// same tensors and bytes.
pub fn rewrite_metadata(
    file: &[u8],
    header: &Gguf,
    metadata: &[(String, Value)],
) -> io::Result<Vec<u8>> {
    let tensors: Vec<TensorToWrite> = header.tensors().iter().map(Into::into).collect();
    let mut out = Vec::new();
    write_gguf::<io::Error>(&mut out, metadata, &tensors, |i| {
        let r = header.tensors()[i].range();
        file.get(r.start as usize..r.end as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| invalid(format!("tensor {i}'s bytes are past the end of the file")))
    })?;
    Ok(out)
}
