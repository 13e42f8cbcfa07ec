//! The CPU model split across workers (see `hearth_core::model::shard`), in one of two ways.
//! Where the page is cross-origin isolated, the requests and their areas live in one
//! SharedArrayBuffer, signalled with Atomics ([`SharedPeers`], [`SharedLink`]): a worker blocks
//! on it. Its layout: a control block of [`CONTROL`] bytes (`i32`s at the indexes below; the
//! indexes `pkg/shards.js` reads are spelled there too), then the input area, then the output
//! area, each of the same number of floats. Elsewhere each request is a message and each
//! shard's rows come back as one ([`MessagePeers`], [`Mailbox`], [`Reply`]), so the first shard
//! awaits them.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use hearth_core::model::{Answers, Link, Peers, Request, Requests, REQUEST_WORDS};
use js_sys::{Atomics, Float32Array, Int32Array, SharedArrayBuffer, Uint32Array};
use wasm_bindgen::prelude::*;

/// Bytes before the input area.
const CONTROL: u32 = 64;
/// The request's number: bumped by the first shard for each request.
const GENERATION: u32 = 0;
/// The other shards that have answered the current request.
const ANSWERED: u32 = 1;
/// Why the other shards cannot answer, where they cannot: 1, set by a worker whose shard
/// failed (`pkg/shard.js`), or [`FAILED_SILENT`], set by the first shard when none has
/// answered for [`PATIENCE`] sleeps (`pkg/shards.js` reads it to say which).
const FAILED: u32 = 2;
const FAILED_SILENT: i32 = 2;
/// The request, as [`Request::to_words`] writes it: [`REQUEST_WORDS`] from here.
const REQUEST: u32 = 3;
/// Sleeps of [`SLEEP_MS`] without an answer after which the first shard takes the others for
/// lost (30 s: a request is one product of at most a few prompts' worth of tokens). Counted in
/// sleeps, not by the clock, so that a machine waking from suspend does not fail it.
const PATIENCE: u32 = 300;
const SLEEP_MS: f64 = 100.0;
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
        for (i, word) in (REQUEST..).zip(request.to_words()) {
            a.store(i, word as i32);
        }
        a.store(ANSWERED, 0);
        Atomics::add(&a.control, GENERATION, 1).expect("the control block is an Int32Array");
        let _ = Atomics::notify(&a.control, GENERATION);
    }

    fn wait(&self) -> Answers<'_> {
        let a = &self.areas;
        loop {
            let answered = a.load(ANSWERED);
            if answered >= self.others {
                return Box::pin(std::future::ready(()));
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

impl Requests for SharedLink {
    fn receive(&self) -> Option<Request> {
        let a = &self.areas;
        while !a.wait_while(GENERATION, self.seen.get(), u32::MAX) {}
        self.seen.set(a.load(GENERATION));
        let mut words = [0; REQUEST_WORDS];
        for (i, word) in (REQUEST..).zip(&mut words) {
            *word = a.load(i) as u32;
        }
        Some(Request::from_words(words))
    }

    fn done(&self) {
        Atomics::add(&self.areas.control, ANSWERED, 1).expect("the control block is an Int32Array");
        let _ = Atomics::notify(&self.areas.control, ANSWERED);
    }
}

impl Link for SharedLink {
    fn input(&self, input: &mut [f32]) {
        Areas::area(&self.areas.input, 0, input.len()).copy_to(input);
    }

    fn write(&self, at: usize, values: &[f32]) {
        Areas::area(&self.areas.output, at, values.len()).copy_from(values);
    }
}

/// The first shard's side where requests go as messages: `post(words, input)` (a
/// `Uint32Array` of [`Request::to_words`] and a `Float32Array`) hands each to every other
/// shard's worker, and their rows arrive in the [`Mailbox`].
pub struct MessagePeers {
    post: js_sys::Function,
    inbox: Rc<Inbox>,
}

/// The output area of [`MessagePeers`] and how many shards have written their rows to it.
struct Inbox {
    output: RefCell<Vec<f32>>,
    answered: Cell<usize>,
    others: usize,
    failed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Inbox {
    /// Resumes the engine awaiting the answers, if it is.
    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

impl MessagePeers {
    /// The other `others` shards, whose rows of up to `capacity` floats come to the returned
    /// mailbox.
    pub fn new(post: js_sys::Function, others: usize, capacity: usize) -> (Self, Mailbox) {
        let inbox = Rc::new(Inbox {
            output: RefCell::new(vec![0.0; capacity]),
            answered: Cell::new(0),
            others,
            failed: Cell::new(false),
            waker: RefCell::new(None),
        });
        let mailbox = Mailbox(inbox.clone());
        (MessagePeers { post, inbox }, mailbox)
    }
}

impl Peers for MessagePeers {
    fn capacity(&self) -> usize {
        self.inbox.output.borrow().len()
    }

    fn send(&self, request: Request, input: &[f32]) {
        self.inbox.answered.set(0);
        let words = Uint32Array::from(&request.to_words()[..]);
        // A worker that is gone shows as its error event, which fails the mailbox.
        let _ = self
            .post
            .call2(&JsValue::NULL, &words, &Float32Array::from(input));
    }

    fn wait(&self) -> Answers<'_> {
        let inbox = &self.inbox;
        Box::pin(poll_fn(move |cx| {
            // As SharedPeers: pkg/worker.js reports the trap as the workers lost.
            assert!(
                !inbox.failed.get(),
                "a CPU worker failed or stopped answering; load the model again"
            );
            if inbox.answered.get() >= inbox.others {
                return Poll::Ready(());
            }
            *inbox.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }))
    }

    fn read(&self, at: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.inbox.output.borrow()[at..at + out.len()]);
    }
}

/// Where the other shards' answers to [`MessagePeers`] are delivered (by `pkg/shards.js`).
#[wasm_bindgen]
pub struct Mailbox(Rc<Inbox>);

#[wasm_bindgen]
impl Mailbox {
    /// One shard's answer, as its [`Reply`] gave it: `values` written at `[at, length]` pairs
    /// of `spans`. Returns whether every shard has now answered.
    pub fn answer(&self, spans: &[u32], values: &[f32]) -> Result<bool, JsValue> {
        let inbox = &self.0;
        let mut output = inbox.output.borrow_mut();
        let mut from = 0;
        for span in spans.chunks_exact(2) {
            let (at, len) = (span[0] as usize, span[1] as usize);
            let (Some(to), Some(values)) =
                (output.get_mut(at..at + len), values.get(from..from + len))
            else {
                return Err(JsError::new("an answer outside the output area").into());
            };
            to.copy_from_slice(values);
            from += len;
        }
        inbox.answered.set(inbox.answered.get() + 1);
        let all = inbox.answered.get() >= inbox.others;
        if all {
            inbox.wake();
        }
        Ok(all)
    }

    /// Says that the other shards will not answer: the engine waiting on them traps.
    pub fn fail(&self) {
        self.0.failed.set(true);
        self.0.wake();
    }
}

/// Another shard's side of one request that came as a message: its rows, collected to go back
/// as one message (`spans`: `[at, length]` pairs; `values`, one after another).
pub struct Reply {
    input: Vec<f32>,
    spans: RefCell<Vec<u32>>,
    values: RefCell<Vec<f32>>,
}

impl Reply {
    pub fn new(input: Vec<f32>) -> Reply {
        Reply {
            input,
            spans: RefCell::default(),
            values: RefCell::default(),
        }
    }

    /// `[spans, values]`, as [`Mailbox::answer`] takes them.
    pub fn into_js(self) -> js_sys::Array {
        let spans = Uint32Array::from(&self.spans.into_inner()[..]);
        let values = Float32Array::from(&self.values.into_inner()[..]);
        js_sys::Array::of2(&spans, &values)
    }
}

impl Link for Reply {
    fn input(&self, input: &mut [f32]) {
        input.copy_from_slice(&self.input[..input.len()]);
    }

    fn write(&self, at: usize, values: &[f32]) {
        self.spans
            .borrow_mut()
            .extend([at as u32, values.len() as u32]);
        self.values.borrow_mut().extend_from_slice(values);
    }
}
