//! The bytes of a model as the browser fetches them: each GGUF header in full, then only the
//! tensors the model reads, streamed in as ranges of their files. A split model (several
//! GGUF files) is presented to the loaders as one virtual file whose header lists every tensor.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use hearth_core::gguf::{write_gguf, ByteSource, Gguf, TensorInfo, TensorToWrite, Value};

use crate::error::WebError;

/// One tensor's bytes: where they lie in their file and in the virtual file, how far they have
/// arrived (always a prefix, so a resent range is harmless), and those of them it keeps.
struct Part {
    name: String,
    file: usize,
    real: Range<u64>,
    virt_start: u64,
    /// The kept bytes, one range after another.
    data: Vec<u8>,
    /// The byte ranges kept, from the tensor's start, in order: all of it unless told
    /// otherwise ([`TensorChunks::keep`]).
    keep: Vec<Range<u64>>,
    arrived: u64,
    /// Handed over to a reader: its bytes are gone from here for good.
    taken: bool,
}

impl Part {
    fn len(&self) -> u64 {
        self.real.end - self.real.start
    }

    fn complete(&self) -> bool {
        !self.taken && self.arrived == self.len()
    }

    fn take(&mut self) -> Vec<u8> {
        self.taken = true;
        std::mem::take(&mut self.data)
    }
}

/// A tensor to fetch: its name, its file, its byte range there, and where it starts in the
/// virtual file.
pub struct Located {
    pub name: String,
    pub file: usize,
    pub real: Range<u64>,
    pub virt_start: u64,
}

/// A [`ByteSource`] of the tensors put into it, its header parsed beforehand (read it with
/// `GgufFile::with_header`). Reading a tensor hands its buffer over to the reader, so each
/// weight lives in wasm memory once and only until loaded.
pub struct TensorChunks {
    len: u64,
    parts: RefCell<Vec<Part>>,
    /// (file, real start) -> index into `parts`.
    by_real: BTreeMap<(usize, u64), usize>,
    /// Virtual start -> index into `parts`.
    by_virt: BTreeMap<u64, usize>,
    /// Tensor bytes handed over to readers so far.
    handed: Cell<u64>,
}

impl TensorChunks {
    /// `len` is the (virtual) file's length; `tensors` are the ones to fetch, as [`Located`].
    pub fn new(len: u64, tensors: Vec<Located>) -> Self {
        let mut parts = Vec::with_capacity(tensors.len());
        let mut by_real = BTreeMap::new();
        let mut by_virt = BTreeMap::new();
        for (
            i,
            Located {
                name,
                file,
                real,
                virt_start,
            },
        ) in tensors.into_iter().enumerate()
        {
            by_real.insert((file, real.start), i);
            by_virt.insert(virt_start, i);
            parts.push(Part {
                name,
                file,
                keep: std::iter::once(0..real.end - real.start).collect(),
                real,
                virt_start,
                data: Vec::new(),
                arrived: 0,
                taken: false,
            });
        }
        TensorChunks {
            len,
            parts: RefCell::new(parts),
            by_real,
            by_virt,
            handed: Cell::new(0),
        }
    }

    /// The ranges to fetch, per file, with neighbours closer than `gap` merged into one.
    pub fn fetch_plan(&self, gap: u64) -> Vec<(usize, Range<u64>)> {
        let parts = self.parts.borrow();
        let mut plan: Vec<(usize, Range<u64>)> = Vec::new();
        for &i in self.by_real.values() {
            let p = &parts[i];
            match plan.last_mut() {
                Some((f, r)) if *f == p.file && p.real.start <= r.end + gap => {
                    r.end = r.end.max(p.real.end)
                }
                _ => plan.push((p.file, p.real.clone())),
            }
        }
        plan
    }

    /// Stores `bytes`, which start at `offset` of file `file`. Bytes outside every tensor are
    /// dropped; bytes a tensor already holds are skipped.
    pub fn put(&self, file: usize, offset: u64, bytes: &[u8]) -> Result<(), WebError> {
        let end = offset + bytes.len() as u64;
        let mut parts = self.parts.borrow_mut();
        let first = self
            .by_real
            .range(..=(file, offset))
            .next_back()
            .map_or((file, 0), |(&k, _)| k);
        for (&(f, start), &i) in self.by_real.range(first..(file, end)) {
            if f != file {
                continue;
            }
            let p = &mut parts[i];
            if p.taken {
                continue;
            }
            let have = start + p.arrived;
            let from = offset.max(have);
            let to = end.min(p.real.end);
            // Only bytes that continue what the tensor holds are kept.
            if from >= to || from > have {
                continue;
            }
            if p.data.capacity() == 0 {
                let kept: u64 = p.keep.iter().map(|r| r.end - r.start).sum();
                p.data
                    .try_reserve_exact(kept as usize)
                    .map_err(|_| WebError::OutOfMemory(kept))?;
            }
            for r in &p.keep {
                let (a, b) = (r.start.max(from - start), r.end.min(to - start));
                if a < b {
                    let at = |x: u64| (start + x - offset) as usize;
                    p.data.extend_from_slice(&bytes[at(a)..at(b)]);
                }
            }
            p.arrived = to - start;
        }
        Ok(())
    }

    /// Keeps only `ranges` (from the tensor's start, in order, within it) of tensor `name`'s
    /// bytes, where none has arrived yet: a worker that holds some rows of every matrix
    /// needs no more of their bytes, not even in passing. Returns whether it will.
    pub fn keep(&self, name: &str, ranges: Vec<Range<u64>>) -> bool {
        let mut parts = self.parts.borrow_mut();
        let Some(p) = parts.iter_mut().find(|p| p.name == name) else {
            return false;
        };
        let within = ranges.iter().all(|r| r.start <= r.end)
            && ranges.windows(2).all(|w| w[0].end <= w[1].start)
            && ranges.last().is_none_or(|r| r.end <= p.len());
        if p.arrived > 0 || p.taken || !within {
            return false;
        }
        p.keep = ranges;
        true
    }

    /// Tensor bytes handed over to readers (each tensor is read once), for load progress.
    pub fn handed(&self) -> u64 {
        self.handed.get()
    }

    /// Hands over every tensor whose bytes have all arrived and that no reader has taken yet,
    /// as (name, bytes).
    pub fn take_complete(&self) -> Vec<(String, Vec<u8>)> {
        let mut parts = self.parts.borrow_mut();
        let mut handed = 0;
        let done: Vec<(String, Vec<u8>)> = parts
            .iter_mut()
            .filter(|p| p.complete())
            .map(|p| {
                handed += p.len();
                (p.name.clone(), p.take())
            })
            .collect();
        self.handed.set(self.handed.get() + handed);
        done
    }

    /// Bytes still to arrive.
    pub fn missing(&self) -> u64 {
        self.parts
            .borrow()
            .iter()
            .filter(|p| !p.taken)
            .map(|p| p.len() - p.arrived)
            .sum()
    }
}

impl ByteSource for TensorChunks {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, range: Range<u64>) -> io::Result<Cow<'_, [u8]>> {
        let mut parts = self.parts.borrow_mut();
        let p = self
            .by_virt
            .get(&range.start)
            .map(|&i| &mut parts[i])
            .filter(|p| p.virt_start + p.len() == range.end)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bytes {range:?} are not one tensor of the model"),
                )
            })?;
        if !p.complete() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the tensor at {range:?} has {} of its {} bytes (already read, or not fetched)",
                    p.arrived,
                    p.len()
                ),
            ));
        }
        self.handed.set(self.handed.get() + p.len());
        Ok(Cow::Owned(p.take()))
    }
}

/// GGUF's keys for split files (llama.cpp's `gguf-split`).
const SPLIT_PREFIX: &str = "split.";

/// The header of one virtual file holding the tensors of every split, with the metadata of the
/// first, and its length. Returns the header bytes and the virtual file's length.
pub fn merge_headers(headers: &[Gguf]) -> Result<(Vec<u8>, u64), WebError> {
    let first = &headers[0];
    let metadata: Vec<(String, Value)> = first
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with(SPLIT_PREFIX))
        .cloned()
        .collect();
    let tensors: Vec<TensorToWrite> = headers
        .iter()
        .flat_map(|h| h.tensors())
        .map(TensorToWrite::from)
        .collect();
    let alignment = first.alignment;
    let data_len: u64 = headers
        .iter()
        .flat_map(|h| h.tensors())
        .map(|t| t.n_bytes.next_multiple_of(alignment))
        .sum();
    // The writer asks for the first tensor's bytes only once the header and its padding are
    // written: stopping there leaves exactly the header.
    struct HeaderDone;
    impl From<io::Error> for HeaderDone {
        fn from(_: io::Error) -> Self {
            HeaderDone
        }
    }
    let mut header = Vec::new();
    let done = write_gguf(&mut header, &metadata, &tensors, |_| {
        Err::<Vec<u8>, _>(HeaderDone)
    });
    if done.is_ok() && !tensors.is_empty() {
        return Err(WebError::Internal("the merged header has no end".into()));
    }
    let len = header.len() as u64 + data_len;
    Ok((header, len))
}

/// The splits' tensors paired with their place in the merged header, for each name in
/// `names`.
pub fn locate(headers: &[Gguf], merged: &Gguf, names: &[String]) -> Result<Vec<Located>, WebError> {
    names
        .iter()
        .map(|name| {
            let (file, real) = headers
                .iter()
                .enumerate()
                .find_map(|(f, h)| h.tensor(name).map(|t: &TensorInfo| (f, t.range())))
                .ok_or_else(|| WebError::Internal(format!("tensor {name:?} vanished")))?;
            let virt = merged
                .tensor(name)
                .ok_or_else(|| WebError::Internal(format!("tensor {name:?} vanished")))?;
            Ok(Located {
                name: name.clone(),
                file,
                real,
                virt_start: virt.offset,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::gguf::GgufFile;
    use hearth_core::quant::GgmlType;

    fn file(tensors: &[(&str, u64)], extra: Vec<(String, Value)>) -> Vec<u8> {
        let t: Vec<TensorToWrite> = tensors
            .iter()
            .map(|&(n, d)| TensorToWrite {
                name: n.into(),
                dims: vec![d],
                ty: GgmlType::F32,
            })
            .collect();
        let mut out = Vec::new();
        write_gguf::<io::Error>(&mut out, &extra, &t, |i| {
            Ok((0..tensors[i].1 * 4)
                .map(|b| (b as u8) ^ (i as u8))
                .collect())
        })
        .unwrap();
        out
    }

    #[test]
    fn split_files_read_as_one() {
        let meta = |no: u16| {
            vec![
                (
                    "general.architecture".to_string(),
                    Value::String("llama".into()),
                ),
                ("split.no".to_string(), Value::U16(no)),
            ]
        };
        let a = file(&[("x", 10), ("y", 3)], meta(0));
        let b = file(&[("z", 7)], meta(1));
        let headers: Vec<Gguf> = [&a, &b]
            .iter()
            .map(|f| Gguf::parse(f, f.len() as u64).unwrap())
            .collect();
        let (header, len) = merge_headers(&headers).unwrap();
        let merged = Gguf::parse(&header, len).unwrap();
        assert!(merged.get("split.no").is_none());
        assert_eq!(merged.tensors().len(), 3);
        let names: Vec<String> = ["x", "z"].map(String::from).to_vec();
        let located = locate(&headers, &merged, &names).unwrap();
        let chunks = TensorChunks::new(len, located);
        // Everything of both files, in pieces that straddle tensor boundaries.
        for (f, bytes) in [&a, &b].iter().enumerate() {
            for (i, piece) in bytes.chunks(37).enumerate() {
                chunks.put(f, (i * 37) as u64, piece).unwrap();
            }
        }
        assert_eq!(chunks.missing(), 0);
        let file = GgufFile::with_header(merged, chunks);
        for (name, src, real) in [("x", &a, &headers[0]), ("z", &b, &headers[1])] {
            let t = file.header.tensor(name).unwrap().clone();
            let r = real.tensor(name).unwrap().range();
            assert_eq!(
                &*file.tensor_bytes(&t).unwrap(),
                &src[r.start as usize..r.end as usize]
            );
            // Handed over: a second read fails rather than copying.
            assert!(file.tensor_bytes(&t).is_err());
        }
    }

    /// File `a`'s header and an empty source for its tensors `names`.
    fn chunks_of(a: &[u8], names: &[&str]) -> (Gguf, TensorChunks) {
        let h = Gguf::parse(a, a.len() as u64).unwrap();
        let located = names
            .iter()
            .map(|&n| {
                let r = h.tensor(n).unwrap().range();
                Located {
                    name: n.into(),
                    file: 0,
                    real: r.clone(),
                    virt_start: r.start,
                }
            })
            .collect();
        let chunks = TensorChunks::new(a.len() as u64, located);
        (h, chunks)
    }

    #[test]
    fn bytes_out_of_order_are_not_kept() {
        let a = file(&[("x", 16)], Vec::new());
        let (h, chunks) = chunks_of(&a, &["x"]);
        let r = h.tensor("x").unwrap().range();
        chunks
            .put(0, r.start + 8, &a[r.start as usize + 8..])
            .unwrap();
        assert_eq!(chunks.missing(), 64);
        chunks
            .put(0, r.start, &a[r.start as usize..r.start as usize + 12])
            .unwrap();
        chunks
            .put(0, r.start + 4, &a[r.start as usize + 4..])
            .unwrap();
        assert_eq!(chunks.missing(), 0);
        assert_eq!(chunks.handed(), 0);
        assert_eq!(&*chunks.read(r.clone()).unwrap(), &a[r.start as usize..]);
        assert_eq!(chunks.handed(), 64);
    }

    #[test]
    fn a_tensor_keeps_only_its_ranges_across_pieces() {
        let a = file(&[("x", 16)], Vec::new());
        let (h, chunks) = chunks_of(&a, &["x"]);
        let r = h.tensor("x").unwrap().range();
        let backwards = Range { start: 8, end: 4 };
        assert!(
            !chunks.keep("x", vec![0..2, backwards]),
            "a range backwards"
        );
        assert!(!chunks.keep("x", vec![8..9, 2..4]), "ranges out of order");
        assert!(!chunks.keep("x", vec![0..2, 60..68]), "past the tensor");
        assert!(chunks.keep("x", vec![2..9, 20..21, 40..64]));
        // Pieces that cut across the ranges, one resent.
        let x = &a[r.start as usize..r.end as usize];
        for (from, to) in [(0, 5), (5, 30), (10, 41), (41, 64)] {
            chunks
                .put(0, r.start + from, &x[from as usize..to as usize])
                .unwrap();
        }
        assert!(!chunks.keep("x", vec![0..1, 2..3]), "bytes have arrived");
        assert_eq!(chunks.missing(), 0);
        let done = chunks.take_complete();
        let want: Vec<u8> = [&x[2..9], &x[20..21], &x[40..64]].concat();
        assert_eq!(done, vec![("x".to_string(), want)]);
        // Progress counts the whole tensor.
        assert_eq!(chunks.handed(), 64);
    }

    #[test]
    fn complete_tensors_are_handed_over_once() {
        let a = file(&[("x", 16), ("y", 8)], Vec::new());
        let (h, chunks) = chunks_of(&a, &["x", "y"]);
        let (x, y) = (
            h.tensor("x").unwrap().range(),
            h.tensor("y").unwrap().range(),
        );
        // All of x and the first bytes of y.
        let cut = y.start as usize + 5;
        chunks.put(0, 0, &a[..cut]).unwrap();
        let done = chunks.take_complete();
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].0.as_str(), &done[0].1[..]),
            ("x", &a[x.start as usize..x.end as usize])
        );
        assert_eq!(chunks.missing(), y.end - cut as u64);
        assert!(chunks.take_complete().is_empty());
        // A resent range does not bring a handed-over tensor back.
        chunks.put(0, 0, &a).unwrap();
        let done = chunks.take_complete();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, "y");
        assert_eq!((chunks.missing(), chunks.handed()), (0, 96));
        assert!(chunks.read(x).is_err());
    }
}
