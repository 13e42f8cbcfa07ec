//! A model's matrices split by rows across workers, each holding one part (shard) of every
//! matrix: in the browser, where a wasm instance has one thread and at most 4 GiB, each worker
//! is an instance of its own. The first shard runs the forward pass; for each product it hands
//! the inputs to the others ([`Peers`]), takes its own rows meanwhile, and reads theirs back.
//! The others only answer ([`Weights::answer`](super::Weights::answer) each request, or
//! [`Weights::serve`](super::Weights::serve) them over a [`Requests`] channel). Every row is
//! computed as the whole matrix would compute it, so a split model's logits are the whole
//! one's, bit for bit.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

/// Shard `index` of `count`: rows `rows * index / count .. rows * (index + 1) / count` of
/// every split matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole model in one place.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// This shard's rows of a matrix of `rows` rows.
    pub fn rows(self, rows: usize) -> Range<usize> {
        rows * self.index / self.count..rows * (self.index + 1) / self.count
    }
}

/// Most products one request asks for: those that take the same inputs (a layer's Q, K and V,
/// its gate and up, a delta net's four), so that the shards meet once for them all.
pub const MOST_PRODUCTS: usize = 4;

/// What the first shard asks of the others, about split matrices by number (in the order of
/// [`TensorId`](super::TensorId)s among the split ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The products of matrices `tensors[..count]` with the `n` inputs in the input area: each
    /// shard writes its rows of input `t`'s product with matrix `j` at
    /// `offset + t * rows + row` of the output area, `offset` being `n` times the rows of the
    /// matrices before `j`.
    Products {
        tensors: [u32; MOST_PRODUCTS],
        count: u32,
        n: u32,
    },
    /// The `n` rows whose numbers are in the input area (as `f32::from_bits`): the shard that
    /// holds row number `t` writes it at `t * cols` of the output area.
    Rows { tensor: u32, n: u32 },
}

/// A [`Request`] as [`REQUEST_WORDS`] integers, for a shared buffer or a message.
pub const REQUEST_WORDS: usize = 3 + MOST_PRODUCTS;

impl Request {
    /// The request as words: its kind (0 products, 1 rows), the number of matrices, `n`, then
    /// the matrices' numbers.
    pub fn to_words(self) -> [u32; REQUEST_WORDS] {
        let (kind, tensors, count, n) = match self {
            Request::Products { tensors, count, n } => (0, tensors, count, n),
            Request::Rows { tensor, n } => (1, [tensor; MOST_PRODUCTS], 1, n),
        };
        let mut words = [0; REQUEST_WORDS];
        words[..3].copy_from_slice(&[kind, count, n]);
        words[3..].copy_from_slice(&tensors);
        words
    }

    /// The request that [`Request::to_words`] wrote.
    pub fn from_words(words: [u32; REQUEST_WORDS]) -> Request {
        let [kind, count, n, ..] = words;
        let mut tensors = [0; MOST_PRODUCTS];
        tensors.copy_from_slice(&words[3..]);
        match kind {
            0 => Request::Products { tensors, count, n },
            _ => Request::Rows {
                tensor: tensors[0],
                n,
            },
        }
    }
}

/// What [`Peers::wait`] returns: done at once where waiting blocks (a shared buffer), later
/// where the answers come as messages.
pub type Answers<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The first shard's side: an input area that every shard reads and an output area that each
/// writes its part of.
pub trait Peers {
    /// Floats each area holds: at least the largest dimension of any split matrix.
    fn capacity(&self) -> usize;
    /// Writes `input` to the input area and hands `request` to every other shard.
    fn send(&self, request: Request, input: &[f32]);
    /// Resolves once every other shard has answered the request sent last.
    fn wait(&self) -> Answers<'_>;
    /// Copies `out.len()` floats of the output area from `at` into `out`.
    fn read(&self, at: usize, out: &mut [f32]);
}

/// Another shard's side of [`Peers`], for one request: where its inputs come from and its rows
/// go.
pub trait Link {
    /// Copies the input area's first `input.len()` floats into `input`.
    fn input(&self, input: &mut [f32]);
    /// Writes `values` to the output area from `at`.
    fn write(&self, at: usize, values: &[f32]);
}

/// A [`Link`] that also carries the requests, one after another (a shared buffer).
pub trait Requests: Link {
    /// Waits for the next request; `None` ends the service.
    fn receive(&self) -> Option<Request>;
    /// Says that this shard has answered the current request.
    fn done(&self);
}
