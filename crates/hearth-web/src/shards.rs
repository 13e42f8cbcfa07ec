//! The CPU model split across workers (see `hearth_core::model::shard`): the requests and
//! their areas in one SharedArrayBuffer, signalled with Atomics. Its layout: a control block
//! of [`CONTROL`] bytes (`i32`s at the indexes below), then the input area, then the output
//! area, each of the same number of floats.

use std::cell::Cell;

use hearth_core::model::shard::MOST_PRODUCTS;
use hearth_core::model::{Link, Peers, Request};
use js_sys::{Atomics, Float32Array, Int32Array, SharedArrayBuffer};

/// Bytes before the input area.
const CONTROL: u32 = 64;
/// The request's number: bumped by the first shard for each request.
const GENERATION: u32 = 0;
/// The other shards that have answered the current request.
const ANSWERED: u32 = 1;
const KIND: u32 = 2;
/// The matrices a request names.
const COUNT: u32 = 3;
/// Inputs, or rows.
const N: u32 = 4;
/// Set by a worker whose shard failed (`pkg/shard.js`): the first shard stops waiting.
const FAILED: u32 = 5;
/// The matrices' numbers, [`MOST_PRODUCTS`] from here.
const TENSORS: u32 = 6;
/// Atomic loads tried before sleeping: a request answered within a few microseconds is not
/// worth a wake-up's latency.
const SPINS: u32 = 2000;

/// The buffer's control block and areas.
struct Areas {
    control: Int32Array,
    input: Float32Array,
    output: Float32Array,
    capacity: usize,
}

impl Areas {
    fn new(buffer: &SharedArrayBuffer) -> Areas {
        let capacity = (buffer.byte_length().saturating_sub(CONTROL) / 8) as usize;
        let floats = |start: u32| {
            Float32Array::new_with_byte_offset_and_length(buffer, start, capacity as u32)
        };
        Areas {
            control: Int32Array::new_with_byte_offset_and_length(buffer, 0, CONTROL / 4),
            input: floats(CONTROL),
            output: floats(CONTROL + 4 * capacity as u32),
            capacity,
        }
    }

    fn load(&self, index: u32) -> i32 {
        Atomics::load(&self.control, index).expect("the control block is an Int32Array")
    }

    fn store(&self, index: u32, value: i32) {
        Atomics::store(&self.control, index, value).expect("the control block is an Int32Array");
    }

    /// Returns once `control[index]` is no longer `value`, spinning first, then sleeping.
    fn wait_while(&self, index: u32, value: i32) {
        for _ in 0..SPINS {
            if self.load(index) != value {
                return;
            }
        }
        while self.load(index) == value {
            // Workers may sleep; the timeout only bounds a missed wake-up.
            let _ = Atomics::wait_with_timeout(&self.control, index, value, 100.0);
        }
    }

    fn area(area: &Float32Array, at: usize, len: usize) -> Float32Array {
        area.subarray(at as u32, (at + len) as u32)
    }
}

/// The bytes of a buffer whose areas hold `capacity` floats each.
pub fn buffer_bytes(capacity: usize) -> f64 {
    CONTROL as f64 + 8.0 * capacity as f64
}

/// The first shard's side, in the engine's worker.
pub struct SharedPeers {
    areas: Areas,
    others: i32,
}

impl SharedPeers {
    /// The other `others` shards, answering through `buffer`.
    pub fn new(buffer: &SharedArrayBuffer, others: usize) -> SharedPeers {
        SharedPeers {
            areas: Areas::new(buffer),
            others: others as i32,
        }
    }
}

impl Peers for SharedPeers {
    fn capacity(&self) -> usize {
        self.areas.capacity
    }

    fn send(&self, request: Request, input: &[f32]) {
        let a = &self.areas;
        Areas::area(&a.input, 0, input.len()).copy_from(input);
        let (kind, tensors, count, n) = match request {
            Request::Products { tensors, count, n } => (0, tensors, count, n),
            Request::Rows { tensor, n } => (1, [tensor; MOST_PRODUCTS], 1, n),
        };
        a.store(KIND, kind);
        a.store(COUNT, count as i32);
        a.store(N, n as i32);
        for (i, t) in (TENSORS..).zip(tensors) {
            a.store(i, t as i32);
        }
        a.store(ANSWERED, 0);
        Atomics::add(&a.control, GENERATION, 1).expect("the control block is an Int32Array");
        let _ = Atomics::notify(&a.control, GENERATION);
    }

    fn wait(&self) {
        let a = &self.areas;
        loop {
            let answered = a.load(ANSWERED);
            if answered >= self.others {
                return;
            }
            // A worker that failed cannot answer: the engine cannot go on.
            assert!(
                a.load(FAILED) == 0,
                "a CPU worker failed; load the model again"
            );
            a.wait_while(ANSWERED, answered);
        }
    }

    fn read(&self, at: usize, out: &mut [f32]) {
        Areas::area(&self.areas.output, at, out.len()).copy_to(out);
    }
}

/// Another shard's side, in a worker of its own.
pub struct SharedLink {
    areas: Areas,
    seen: Cell<i32>,
}

impl SharedLink {
    /// A link over a new `buffer`. Its requests are counted from 0, not from what the buffer
    /// holds now: the worker says it serves before it starts to, and the first request may
    /// already be in.
    pub fn new(buffer: &SharedArrayBuffer) -> SharedLink {
        SharedLink {
            areas: Areas::new(buffer),
            seen: Cell::new(0),
        }
    }
}

impl Link for SharedLink {
    fn receive(&self) -> Option<Request> {
        let a = &self.areas;
        a.wait_while(GENERATION, self.seen.get());
        self.seen.set(a.load(GENERATION));
        let mut tensors = [0; MOST_PRODUCTS];
        for (i, t) in (TENSORS..).zip(&mut tensors) {
            *t = a.load(i) as u32;
        }
        let (count, n) = (a.load(COUNT) as u32, a.load(N) as u32);
        Some(match a.load(KIND) {
            0 => Request::Products { tensors, count, n },
            _ => Request::Rows {
                tensor: tensors[0],
                n,
            },
        })
    }

    fn input(&self, input: &mut [f32]) {
        Areas::area(&self.areas.input, 0, input.len()).copy_to(input);
    }

    fn write(&self, at: usize, values: &[f32]) {
        Areas::area(&self.areas.output, at, values.len()).copy_from(values);
    }

    fn done(&self) {
        Atomics::add(&self.areas.control, ANSWERED, 1).expect("the control block is an Int32Array");
        let _ = Atomics::notify(&self.areas.control, ANSWERED);
    }
}
