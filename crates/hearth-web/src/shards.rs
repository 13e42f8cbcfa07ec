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
/// Why the other shards cannot answer, where they cannot: 1, set by a worker whose shard
/// failed (`pkg/shard.js`), or [`FAILED_SILENT`], set by the first shard when none has
/// answered for [`PATIENCE`] sleeps (`pkg/shards.js` reads it to say which).
const FAILED: u32 = 5;
const FAILED_SILENT: i32 = 2;
/// Sleeps of [`SLEEP_MS`] without an answer after which the first shard takes the others for
/// lost (30 s: a request is one product of at most a few prompts' worth of tokens). Counted in
/// sleeps, not by the clock, so that a machine waking from suspend does not fail it.
const PATIENCE: u32 = 300;
const SLEEP_MS: f64 = 100.0;
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

    /// Returns once `control[index]` is no longer `value`, spinning first, then sleeping at
    /// most `sleeps` times (`false` if it is still `value` after them).
    fn wait_while(&self, index: u32, value: i32, sleeps: u32) -> bool {
        for _ in 0..SPINS {
            if self.load(index) != value {
                return true;
            }
        }
        for _ in 0..sleeps {
            if self.load(index) != value {
                return true;
            }
            // Workers may sleep; the timeout only bounds a missed wake-up.
            let _ = Atomics::wait_with_timeout(&self.control, index, value, SLEEP_MS);
        }
        self.load(index) != value
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
            // A worker that failed, or that stopped answering, leaves the engine unable to go
            // on: pkg/worker.js reports the trap as the workers lost, from `FAILED`.
            assert!(
                a.load(FAILED) == 0,
                "a CPU worker failed; load the model again"
            );
            if !a.wait_while(ANSWERED, answered, PATIENCE) {
                a.store(FAILED, FAILED_SILENT);
                panic!("a CPU worker stopped answering; load the model again");
            }
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
        while !a.wait_while(GENERATION, self.seen.get(), u32::MAX) {}
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
