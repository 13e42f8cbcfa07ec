//! GGUF files: the header (metadata and tensor index), and one tensor's bytes at a time from a
//! [`ByteSource`].
//!
//! The header parser is a pure function of the file's first bytes, so any transport can drive
//! it: a memory map natively, HTTP range requests in the browser. It asks for more bytes with
//! [`GgufError::NeedMore`] until the whole header is at hand.

mod read;
mod source;
mod value;
mod write;

use std::collections::HashMap;
use std::ops::Range;

#[cfg(not(target_arch = "wasm32"))]
pub use source::MappedFile;
pub use source::{ByteSource, GgufFile, RangedSource, SourceError};
pub use value::{Array, Value};
pub use write::{rewrite_metadata, write_gguf, TensorToWrite};

use crate::quant::GgmlType;

/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GgufError {
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("GGUF version {0} is not supported (versions 2 and 3 are; a big-endian file also reads as an odd version)")]
    UnsupportedVersion(u32),
    #[error("the first {have} bytes end inside the GGUF header; read more of the file")]
    NeedMore { have: u64 },
    #[error("the file is truncated: it ends at byte {at} inside the {what}")]
    Truncated { at: u64, what: &'static str },
    #[error("{what} {count} at byte {at} is larger than the rest of the file could hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        at: u64,
    },
    #[error("{what} at byte {at} is not valid UTF-8")]
    InvalidUtf8 { at: u64, what: &'static str },
    #[error("unknown metadata value type {tag} at byte {at}")]
    UnknownValueType { tag: u32, at: u64 },
    #[error("invalid bool byte {byte} at byte {at}")]
    InvalidBool { at: u64, byte: u8 },
    #[error("metadata arrays nest too deeply at byte {at}")]
    ArrayTooDeep { at: u64 },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("general.alignment must be a power of two up to 1 MiB, not {0}")]
    BadAlignment(String),
    #[error("tensor {name:?} has unknown type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor {name:?} is malformed: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor {name:?} ({n_bytes} bytes at data offset {offset}) lies past the end of the {data_len} bytes of tensor data")]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        n_bytes: u64,
        data_len: u64,
    },
    #[error("tensors {0:?} and {1:?} overlap")]
    OverlappingTensors(String, String),
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
}

/// One tensor of the index: its shape (ggml order: `dims[0]` is the row length), type and the
/// absolute byte range of its data in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute offset of the first byte in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The byte range of this tensor's data in the file.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.n_bytes
    }
}

/// A parsed GGUF header.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_names: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset where tensor data starts.
    pub data_offset: u64,
    pub file_len: u64,
}

impl Gguf {
    /// Parses the header from `bytes`, the start of a file that is `file_len` bytes long.
    /// `bytes` may be the whole file or any prefix; a prefix too short gives
    /// [`GgufError::NeedMore`].
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self, GgufError> {
        read::parse(bytes, file_len, &[])
    }

    /// As [`Gguf::parse`], leaving out the metadata under the keys in `skip` (which are walked
    /// over, never held: a tokenizer's vocabulary where no tokenizer is built).
    pub fn parse_skipping(bytes: &[u8], file_len: u64, skip: &[&str]) -> Result<Self, GgufError> {
        read::parse(bytes, file_len, skip)
    }

    fn new(
        version: u32,
        metadata: Vec<(String, Value)>,
        keys: HashMap<String, usize>,
        tensors: Vec<TensorInfo>,
        alignment: u64,
        data_offset: u64,
        file_len: u64,
    ) -> Result<Self, GgufError> {
        let mut tensor_names = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if tensor_names.insert(t.name.clone(), i).is_some() {
                return Err(GgufError::DuplicateTensor(t.name.clone()));
            }
        }
        Ok(Gguf {
            version,
            metadata,
            keys,
            tensors,
            tensor_names,
            alignment,
            data_offset,
            file_len,
        })
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Drops the metadata that `keep(key, value)` refuses (a tokenizer's vocabulary once the
    /// tokenizer is built: wasm memory never shrinks, so what is freed early is reused).
    pub fn retain_metadata(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        self.metadata.retain(|(k, v)| keep(k, v));
        self.keys = (self.metadata.iter().enumerate())
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&Array> {
        self.get(key).and_then(Value::as_array)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_names.get(name).map(|&i| &self.tensors[i])
    }

    /// `general.architecture`, the key every other model key is named after.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropped keys are gone, and every kept one is still found by name.
    #[test]
    fn retained_metadata_is_found_by_key() {
        let meta = [("a", 1u32), ("b", 2), ("c", 3), ("d", 4)]
            .map(|(k, v)| (k.to_string(), Value::U32(v)));
        let mut bytes = Vec::new();
        write::write_gguf::<std::io::Error>(&mut bytes, &meta, &[], |_| unreachable!()).unwrap();
        let mut h = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
        h.retain_metadata(|k, _| k != "b" && k != "c");
        assert_eq!(h.get_u64("a"), Some(1));
        assert_eq!(h.get("b"), None);
        assert_eq!(h.get("c"), None);
        assert_eq!(h.get_u64("d"), Some(4));
        assert_eq!(h.metadata().len(), 2);
    }
}
