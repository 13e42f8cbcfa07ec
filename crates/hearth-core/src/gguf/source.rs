//! Where a GGUF file's bytes come from: a memory map, a buffer, or any ranged reader.

use std::borrow::Cow;
use std::io;
use std::ops::Range;

use super::{Gguf, GgufError, TensorInfo};

/// Random access to a file's bytes, one range at a time.
pub trait ByteSource {
    /// Length of the whole file.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly the bytes of `range`, which lies inside `0..len()`.
    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>>;
}

fn slice_range(bytes: &[u8], range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
    let start = usize::try_from(range.start).ok();
    let end = usize::try_from(range.end).ok();
    match (start, end) {
        (Some(start), Some(end)) if start <= end && end <= bytes.len() => {
            Ok(Cow::Borrowed(&bytes[start..end]))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read past the end of the source",
        )),
    }
}

impl ByteSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
        slice_range(self, range)
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
        slice_range(self, range)
    }
}

/// A file mapped into memory: tensors are borrowed from the page cache, never copied whole.
#[cfg(not(target_arch = "wasm32"))]
pub struct MappedFile(memmap2::Mmap);

#[cfg(not(target_arch = "wasm32"))]
impl MappedFile {
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the map is read-only; a model file changed by another process while mapped is
        // outside what this program can guard against, as with every mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile(map))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for MappedFile {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
        slice_range(&self.0, range)
    }
}

/// A source made of ranged reads, such as HTTP range requests: `read_range(range)` returns
/// exactly the bytes of `range`.
pub struct RangedSource<F> {
    len: u64,
    read_range: F,
}

impl<F: Fn(Range<u64>) -> io::Result<Vec<u8>>> RangedSource<F> {
    pub fn new(len: u64, read_range: F) -> Self {
        RangedSource { len, read_range }
    }
}

impl<F: Fn(Range<u64>) -> io::Result<Vec<u8>>> ByteSource for RangedSource<F> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
        let want = range.end - range.start;
        let bytes = (self.read_range)(range)?;
        if bytes.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "a ranged read returned {} bytes where {want} were asked for",
                    bytes.len()
                ),
            ));
        }
        Ok(Cow::Owned(bytes))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Format(#[from] GgufError),
    #[error("reading the model failed: {0}")]
    Io(#[from] io::Error),
}

/// How much of a file is read first in the hope that it holds the whole header.
const FIRST_READ: u64 = 1 << 20;

/// A GGUF header together with the source of its tensors' bytes.
pub struct GgufFile<S> {
    pub header: Gguf,
    source: S,
}

impl<S: ByteSource> GgufFile<S> {
    /// Reads the header, fetching a growing prefix of the file until it is complete.
    pub fn open(source: S) -> Result<Self, SourceError> {
        let len = source.len();
        let mut want = FIRST_READ.min(len);
        loop {
            let prefix = source.read(0..want)?;
            match Gguf::parse(&prefix, len) {
                Ok(header) => return Ok(GgufFile { header, source }),
                Err(GgufError::NeedMore { .. }) => want = want.saturating_mul(4).min(len),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A header parsed before, with its source.
    pub fn with_header(header: Gguf, source: S) -> Self {
        GgufFile { header, source }
    }

    /// The bytes of one tensor.
    pub fn tensor_bytes(&self, tensor: &TensorInfo) -> io::Result<Cow<'_, [u8]>> {
        self.source.read(tensor.range())
    }

    pub fn source(&self) -> &S {
        &self.source
    }
}
