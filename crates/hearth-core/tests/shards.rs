//! A model split by rows across shards, each on a thread of its own as each browser worker
//! is, gives the whole model's logits bit for bit: on every fixture, through a prompt and
//! decode steps, with areas so small that long prompts go through them in several rounds;
//! with the first shard blocking on the answers (a shared buffer) or awaiting them (messages).

use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};
use std::thread;

use hearth_core::gguf::GgufFile;
use hearth_core::model::{
    Answers, CpuModel, Link, ModelSpec, Peers, Request, Requests, Shard, Weights, WeightsBuilder,
};
use hearth_fixtures::{ids, model_fixtures};

/// The input and output areas and the current request, shared by every shard.
struct Board {
    input: Mutex<Vec<f32>>,
    output: Mutex<Vec<f32>>,
    /// The request's number, the request (`None` once the service ends) and the answers so far.
    state: Mutex<(u64, Option<Request>, usize)>,
    changed: Condvar,
    /// Where the first shard awaits the answers: woken by the last.
    waker: Mutex<Option<Waker>>,
}

/// The first shard's side: blocking until the others answer, or with `later`, awaiting them.
struct First {
    board: Arc<Board>,
    others: usize,
    later: bool,
}

impl Peers for First {
    fn capacity(&self) -> usize {
        self.board.input.lock().unwrap().len()
    }

    fn send(&self, request: Request, input: &[f32]) {
        self.board.input.lock().unwrap()[..input.len()].copy_from_slice(input);
        let mut state = self.board.state.lock().unwrap();
        *state = (state.0 + 1, Some(request), 0);
        self.board.changed.notify_all();
    }

    fn wait(&self) -> Answers<'_> {
        if self.later {
            return Box::pin(poll_fn(|cx| {
                *self.board.waker.lock().unwrap() = Some(cx.waker().clone());
                match self.board.state.lock().unwrap().2 < self.others {
                    true => Poll::Pending,
                    false => Poll::Ready(()),
                }
            }));
        }
        let state = self.board.state.lock().unwrap();
        drop(
            self.board
                .changed
                .wait_while(state, |s| s.2 < self.others)
                .unwrap(),
        );
        Box::pin(std::future::ready(()))
    }

    fn read(&self, at: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.board.output.lock().unwrap()[at..at + out.len()]);
    }
}

impl Drop for First {
    fn drop(&mut self) {
        let mut state = self.board.state.lock().unwrap();
        *state = (state.0 + 1, None, 0);
        self.board.changed.notify_all();
    }
}

/// Another shard's side.
struct Other {
    board: Arc<Board>,
    seen: std::cell::Cell<u64>,
}

impl Requests for Other {
    fn receive(&self) -> Option<Request> {
        let state = self.board.state.lock().unwrap();
        let state = self
            .board
            .changed
            .wait_while(state, |s| s.0 == self.seen.get())
            .unwrap();
        self.seen.set(state.0);
        state.1
    }

    fn done(&self) {
        self.board.state.lock().unwrap().2 += 1;
        self.board.changed.notify_all();
        if let Some(waker) = self.board.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl Link for Other {
    fn input(&self, input: &mut [f32]) {
        input.copy_from_slice(&self.board.input.lock().unwrap()[..input.len()]);
    }

    fn write(&self, at: usize, values: &[f32]) {
        self.board.output.lock().unwrap()[at..at + values.len()].copy_from_slice(values);
    }
}

/// Shard `shard` of the model in `bytes`: cut from each whole tensor (as natively), or with
/// `kept`, built from the bytes it keeps alone (as a browser worker takes them in).
fn load(bytes: &[u8], shard: Shard, kept: bool) -> CpuModel {
    let file = GgufFile::open(bytes.to_vec()).unwrap();
    let spec = ModelSpec::from_gguf(&file.header).unwrap();
    if !kept {
        let weights = Weights::load_shard(&file, &spec, shard, &mut |_, _| {}).unwrap();
        return CpuModel { spec, weights };
    }
    let mut builder = WeightsBuilder::new(&spec, shard);
    for (name, id) in builder.names() {
        let info = file.header.tensor(&name).unwrap();
        let data = file.tensor_bytes(info).unwrap().into_owned();
        match builder.kept_bytes(id, info) {
            Some(ranges) => {
                let cut = ranges
                    .into_iter()
                    .flat_map(|r| data[r.start as usize..r.end as usize].to_vec());
                builder.add_kept(id, info, cut.collect());
            }
            None => builder.add(id, info, data),
        }
    }
    let weights = builder.finish().unwrap();
    CpuModel { spec, weights }
}

/// The logits of `tokens` (every position's, or with `later` the last one's, awaited) and then
/// of two more tokens, one at a time.
fn run(model: &CpuModel, tokens: &[u32], later: bool) -> Vec<Vec<f32>> {
    let mut state = model.new_state(tokens.len() + 2);
    let mut forward = |tokens: &[u32], all: bool| match (later, all) {
        (true, _) => pollster::block_on(model.forward_async(&mut state, tokens)).unwrap(),
        (false, true) => model.forward_all(&mut state, tokens).unwrap(),
        (false, false) => model.forward(&mut state, tokens).unwrap(),
    };
    let mut out = vec![forward(tokens, true)];
    for t in [tokens[0], tokens[tokens.len() / 2]] {
        out.push(forward(&[t], false));
    }
    out
}

#[test]
fn a_split_model_computes_what_the_whole_one_does() {
    split_models_match(false, false);
}

/// The same with each shard built from only the bytes it keeps.
#[test]
fn a_shard_built_from_its_own_bytes_computes_the_same() {
    split_models_match(true, false);
}

/// The same with the first shard awaiting the answers, as where they come by message.
#[test]
fn a_split_model_awaiting_its_answers_computes_the_same() {
    split_models_match(false, true);
}

fn split_models_match(kept: bool, later: bool) {
    let count = 3;
    for f in model_fixtures() {
        let label = f.label();
        let bytes = f.gguf_bytes();
        let reference: serde_json::Value = f.reference();
        let tokens = ids(&reference["sequences"][0]["tokens"]);
        let mut want = run(&load(&bytes, Shard::WHOLE, false), &tokens, false);
        if later {
            // Only the prompt's last logits.
            let earlier = want[0].len() - want[1].len();
            want[0].drain(..earlier);
        }

        let mut first = load(&bytes, Shard { index: 0, count }, kept);
        // Room for the largest matrix dimension only: a prompt's products take several rounds.
        let capacity = first.weights.largest_split_dimension();
        let board = Arc::new(Board {
            input: Mutex::new(vec![0.0; capacity]),
            output: Mutex::new(vec![0.0; capacity]),
            state: Mutex::new((0, None, 0)),
            changed: Condvar::new(),
            waker: Mutex::new(None),
        });
        let got = thread::scope(|scope| {
            for index in 1..count {
                let (board, bytes) = (board.clone(), &bytes);
                scope.spawn(move || {
                    let model = load(bytes, Shard { index, count }, kept);
                    model.weights.serve(&Other {
                        board,
                        seen: Default::default(),
                    });
                });
            }
            first.weights.set_peers(Box::new(First {
                board: board.clone(),
                others: count - 1,
                later,
            }));
            let got = run(&first, &tokens, later);
            // Ends the other shards' service.
            drop(first);
            got
        });
        assert_eq!(got, want, "{label}: a split model's logits");
    }
}
