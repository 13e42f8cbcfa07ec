//! Parsing a GGUF header (metadata and tensor index) from the first bytes of a file.
//!
//! Nothing read from the file is trusted: every count is checked against the bytes that could
//! hold it before anything is allocated, every tensor's bytes must lie inside the file, aligned
//! and apart from every other tensor's.

use std::collections::HashMap;

use super::value::{tag, Array, Value};
use super::{Gguf, GgufError, TensorInfo, MAX_DIMS};
use crate::quant::GgmlType;

/// Arrays nest at most this deep; real files nest at most once.
const MAX_ARRAY_DEPTH: usize = 4;

/// A cursor over the bytes at hand, which may be only a prefix of the file.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file_len: u64,
}

impl<'a> Reader<'a> {
    /// The error for running off the end of the bytes at hand: more are needed when the file
    /// goes on, otherwise the file itself is truncated.
    fn end(&self, what: &'static str) -> GgufError {
        if (self.bytes.len() as u64) < self.file_len {
            GgufError::NeedMore {
                have: self.bytes.len() as u64,
            }
        } else {
            GgufError::Truncated {
                at: self.pos as u64,
                what,
            }
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.end(what))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let b = self.take(N, what)?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Bytes from here to the end of the file (not just of the bytes at hand).
    fn remaining_in_file(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    /// Checks that `count` items of at least `min_size` bytes each could fit in the rest of the
    /// file, so that a count is never trusted further than the file could back it.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: &'static str,
    ) -> Result<usize, GgufError> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|need| need <= self.remaining_in_file());
        if !fits {
            return Err(GgufError::CountTooLarge {
                what,
                count,
                at: self.pos as u64,
            });
        }
        usize::try_from(count).map_err(|_| GgufError::CountTooLarge {
            what,
            count,
            at: self.pos as u64,
        })
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.pos as u64;
        let len = self.check_count(len, 1, what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { at, what })
    }

    fn value(&mut self, type_tag: u32, depth: usize) -> Result<Value, GgufError> {
        Ok(match type_tag {
            tag::U8 => Value::U8(u8::from_le_bytes(self.array("u8 value")?)),
            tag::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            tag::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            tag::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            tag::U32 => Value::U32(self.u32("u32 value")?),
            tag::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            tag::U64 => Value::U64(self.u64("u64 value")?),
            tag::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            tag::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            tag::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            tag::BOOL => Value::Bool(self.bool()?),
            tag::STRING => Value::String(self.string("string value")?),
            tag::ARRAY => Value::Array(self.array_value(depth)?),
            other => {
                return Err(GgufError::UnknownValueType {
                    tag: other,
                    at: self.pos as u64 - 4,
                })
            }
        })
    }

    fn bool(&mut self) -> Result<bool, GgufError> {
        let at = self.pos as u64;
        match self.array::<1>("bool value")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(GgufError::InvalidBool { at, byte: other }),
        }
    }

    /// Reads `count` fixed-size little-endian items.
    fn items<T, const N: usize>(
        &mut self,
        count: usize,
        decode: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufError> {
        let bytes = self.take(count * N, "array elements")?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| decode(c.try_into().expect("chunks_exact gives N bytes")))
            .collect())
    }

    /// An array's element type and length, the length checked against the bytes its elements
    /// need at least.
    fn array_header(&mut self) -> Result<(u32, usize), GgufError> {
        let elem = self.u32("array element type")?;
        let count = self.u64("array length")?;
        let min_size = match elem {
            tag::STRING => 8,
            tag::ARRAY => 12,
            other => match fixed_size(other) {
                Some(size) => size as u64,
                None => {
                    return Err(GgufError::UnknownValueType {
                        tag: other,
                        at: self.pos as u64 - 12,
                    })
                }
            },
        };
        Ok((elem, self.check_count(count, min_size, "array length")?))
    }

    /// Walks over a value of a key that is not kept: its lengths are checked as
    /// [`Reader::value`] checks them; its contents are neither read nor held.
    fn skip_value(&mut self, type_tag: u32, depth: usize) -> Result<(), GgufError> {
        match type_tag {
            tag::STRING => self.skip_string(),
            tag::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::ArrayTooDeep {
                        at: self.pos as u64,
                    });
                }
                let (elem, n) = self.array_header()?;
                match fixed_size(elem) {
                    Some(size) => self.take(n * size, "array elements").map(drop),
                    None => (0..n).try_for_each(|_| self.skip_value(elem, depth + 1)),
                }
            }
            other => match fixed_size(other) {
                Some(size) => self.take(size, "value").map(drop),
                None => Err(GgufError::UnknownValueType {
                    tag: other,
                    at: self.pos as u64 - 4,
                }),
            },
        }
    }

    fn skip_string(&mut self) -> Result<(), GgufError> {
        let len = self.u64("string value")?;
        let len = self.check_count(len, 1, "string value")?;
        self.take(len, "string value").map(drop)
    }

    fn array_value(&mut self, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::ArrayTooDeep {
                at: self.pos as u64,
            });
        }
        let (elem, n) = self.array_header()?;
        Ok(match elem {
            tag::U8 => Array::U8(self.items(n, u8::from_le_bytes)?),
            tag::I8 => Array::I8(self.items(n, i8::from_le_bytes)?),
            tag::U16 => Array::U16(self.items(n, u16::from_le_bytes)?),
            tag::I16 => Array::I16(self.items(n, i16::from_le_bytes)?),
            tag::U32 => Array::U32(self.items(n, u32::from_le_bytes)?),
            tag::I32 => Array::I32(self.items(n, i32::from_le_bytes)?),
            tag::U64 => Array::U64(self.items(n, u64::from_le_bytes)?),
            tag::I64 => Array::I64(self.items(n, i64::from_le_bytes)?),
            tag::F32 => Array::F32(self.items(n, f32::from_le_bytes)?),
            tag::F64 => Array::F64(self.items(n, f64::from_le_bytes)?),
            tag::BOOL => Array::Bool((0..n).map(|_| self.bool()).collect::<Result<_, _>>()?),
            tag::STRING => Array::String(
                (0..n)
                    .map(|_| self.string("string in array"))
                    .collect::<Result<_, _>>()?,
            ),
            _ => Array::Array(
                (0..n)
                    .map(|_| self.array_value(depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// The bytes of a value of fixed size, by its type tag (strings and arrays have none).
fn fixed_size(type_tag: u32) -> Option<usize> {
    match type_tag {
        tag::U8 | tag::I8 | tag::BOOL => Some(1),
        tag::U16 | tag::I16 => Some(2),
        tag::U32 | tag::I32 | tag::F32 => Some(4),
        tag::U64 | tag::I64 | tag::F64 => Some(8),
        _ => None,
    }
}

/// Parses the header from `bytes`, the first bytes of a file of `file_len` bytes, leaving out
/// the metadata whose keys are in `skip`.
///
/// When `bytes` is a strict prefix that ends inside the header, the error is
/// [`GgufError::NeedMore`]: read more of the file and call again.
pub(super) fn parse(bytes: &[u8], file_len: u64, skip: &[&str]) -> Result<Gguf, GgufError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        file_len,
    };
    let magic = r.array::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    let n_kv = r.check_count(n_kv, 13, "metadata count")?;

    let mut metadata = Vec::new();
    let mut keys = HashMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let type_tag = r.u32("metadata value type")?;
        if skip.contains(&key.as_str()) {
            r.skip_value(type_tag, 0)?;
            continue;
        }
        let value = r.value(type_tag, 0)?;
        if keys.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => 32,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err(GgufError::BadAlignment(v.summary())),
        },
    };

    // A tensor info takes at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes.
    let n_tensors = r.check_count(n_tensors, 24, "tensor count")?;
    let mut raw = Vec::new();
    for _ in 0..n_tensors {
        raw.push(read_tensor_info(&mut r)?);
    }

    let data_offset = (r.pos as u64).next_multiple_of(alignment);
    let tensors = place_tensors(raw, data_offset, file_len, alignment)?;
    Gguf::new(
        version,
        metadata,
        keys,
        tensors,
        alignment,
        data_offset,
        file_len,
    )
}

/// A tensor info as read, before its place in the file is checked.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
}

fn read_tensor_info(r: &mut Reader) -> Result<RawTensor, GgufError> {
    let name = r.string("tensor name")?;
    let n_dims = r.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadTensor {
            name,
            reason: format!("{n_dims} dimensions"),
        });
    }
    let dims = (0..n_dims)
        .map(|_| r.u64("tensor dimension"))
        .collect::<Result<Vec<_>, _>>()?;
    let type_id = r.u32("tensor type")?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        name: name.clone(),
        id: type_id,
    })?;
    let offset = r.u64("tensor offset")?;
    Ok(RawTensor {
        name,
        dims,
        ty,
        offset,
    })
}

/// Checks each tensor's size and place, and turns relative offsets into absolute ranges.
fn place_tensors(
    raw: Vec<RawTensor>,
    data_offset: u64,
    file_len: u64,
    alignment: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    // A file without tensors (a vocabulary-only file) may end before the aligned data offset;
    // with tensors, the bounds check below refuses any that lie past the end.
    let data_len = file_len.saturating_sub(data_offset);
    let mut tensors = Vec::with_capacity(raw.len());
    for RawTensor {
        name,
        dims,
        ty,
        offset,
    } in raw
    {
        let bad = |reason: String| GgufError::BadTensor {
            name: name.clone(),
            reason,
        };
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
        if dims[0] % ty.block_size() as u64 != 0 {
            return Err(bad(format!(
                "row of {} elements is not whole {ty} blocks of {}",
                dims[0],
                ty.block_size()
            )));
        }
        let n_bytes = ty
            .bytes_for(elements)
            .ok_or_else(|| bad(format!("{elements} elements are not whole {ty} blocks")))?;
        if offset % alignment != 0 {
            return Err(bad(format!(
                "offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if offset.checked_add(n_bytes).is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfBounds {
                name,
                offset,
                n_bytes,
                data_len,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset: data_offset + offset,
            n_bytes,
        });
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::OverlappingTensors(
                pair[0].name.clone(),
                pair[1].name.clone(),
            ));
        }
    }
    Ok(tensors)
}
