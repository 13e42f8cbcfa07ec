//! A model split by rows across shards, each on a thread of its own as each browser worker
//! is, gives the whole model's logits bit for bit: on every fixture, through a prompt and
//! decode steps, with areas so small that long prompts go through them in several rounds.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use hearth_core::gguf::GgufFile;
use hearth_core::model::{
    CpuModel, Link, ModelSpec, Peers, Request, Shard, Weights, WeightsBuilder,
};
use hearth_fixtures::{ids, model_fixtures};

/// The input and output areas and the current request, shared by every shard.
struct Board {
    input: Mutex<Vec<f32>>,
    output: Mutex<Vec<f32>>,
    /// The request's number, the request (`None` once the service ends) and the answers so far.
    state: Mutex<(u64, Option<Request>, usize)>,
    changed: Condvar,
}

/// The first shard's side.
struct First {
    board: Arc<Board>,
    others: usize,
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

    fn wait(&self) {
        let state = self.board.state.lock().unwrap();
        drop(
            self.board
                .changed
                .wait_while(state, |s| s.2 < self.others)
                .unwrap(),
        );
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

impl Link for Other {
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

    fn input(&self, input: &mut [f32]) {
        input.copy_from_slice(&self.board.input.lock().unwrap()[..input.len()]);
    }

    fn write(&self, at: usize, values: &[f32]) {
        self.board.output.lock().unwrap()[at..at + values.len()].copy_from_slice(values);
    }

    fn done(&self) {
        self.board.state.lock().unwrap().2 += 1;
        self.board.changed.notify_all();
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

/// The logits of `tokens` and then of two more tokens, one at a time.
fn run(model: &CpuModel, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut state = model.new_state(tokens.len() + 2);
    let mut out = vec![model.forward_all(&mut state, tokens).unwrap()];
    for t in [tokens[0], tokens[tokens.len() / 2]] {
        out.push(model.forward(&mut state, &[t]).unwrap());
    }
    out
}

#[test]
fn a_split_model_computes_what_the_whole_one_does() {
    split_models_match(false);
}

/// The same with each shard built from only the bytes it keeps.
#[test]
fn a_shard_built_from_its_own_bytes_computes_the_same() {
    split_models_match(true);
}

fn split_models_match(kept: bool) {
    let count = 3;
    for f in model_fixtures() {
        let label = f.label();
        let bytes = f.gguf_bytes();
        let reference: serde_json::Value = f.reference();
        let tokens = ids(&reference["sequences"][0]["tokens"]);
        let want = run(&load(&bytes, Shard::WHOLE, false), &tokens);

        let mut first = load(&bytes, Shard { index: 0, count }, kept);
        // Room for the largest matrix dimension only: a prompt's products take several rounds.
        let capacity = first.weights.largest_split_dimension();
        let board = Arc::new(Board {
            input: Mutex::new(vec![0.0; capacity]),
            output: Mutex::new(vec![0.0; capacity]),
            state: Mutex::new((0, None, 0)),
            changed: Condvar::new(),
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
            }));
            let got = run(&first, &tokens);
            // Ends the other shards' service.
            drop(first);
            got
        });
        assert_eq!(got, want, "{label}: a split model's logits");
    }
}
