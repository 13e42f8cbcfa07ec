//! Lowering a model's description to GPU buffers and kernel launches, once, at load. Every
//! operation is written once, as a function of the rows it runs over: one row gives the decode
//! plan's launch, a chunk of [`CHUNK`] rows the prompt plan's. Buffers are made from the header
//! alone; each notes which tensor fills it ([`Pending`]), so weights can stream in later.

mod held;
mod lower;
mod plans;

use std::collections::BTreeMap;

use hearth_core::gguf::Gguf;
use hearth_core::model::{Mixer, ModelSpec, Role, TensorId};

use crate::kernels::{
    token_mask, Dispatch, Kernels, NormParams, Output, Steps, TopLaunches, TOP_K,
};
use crate::recurrent::RecurrentState;
use crate::{Gpu, GpuError};
use held::Held;
pub use held::{Pending, Target};
use lower::Lowering;
pub use lower::{kv_slots, rope_table};
use plans::{Acts, Plans};
pub use plans::{Recurrence, CHUNK};

/// Everything a model's runs use, made at load.
pub struct Plan {
    pub steps: Steps,
    /// Embedding lookups, one per part of the table: (first row, rows, launch).
    pub embed: Vec<(usize, usize, Dispatch)>,
    /// Learned positions added to the embedding, one per part of their table, as `embed`
    /// (none without them).
    pub positions: Vec<(usize, usize, Dispatch)>,
    pub decode: Vec<Dispatch>,
    /// A prompt chunk's launches, each over the whole chunk, bound to its first step.
    pub prompt: Vec<Dispatch>,
    pub head: Vec<Dispatch>,
    /// Argmax over every token, and over the tokens in `mask`.
    pub argmax: [Dispatch; 2],
    /// An output format's mask, written before a step that uses it.
    pub mask: wgpu::Buffer,
    pub top: TopLaunches,
    pub top_read: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub logits_read: wgpu::Buffer,
    pub result: wgpu::Buffer,
    pub result_read: wgpu::Buffer,
    pub recurrent: RecurrentState,
    /// The recurrence launches (each delta-net layer's convolution and delta rule, each
    /// short-convolution layer's convolution) of the
    /// decode plan and of the prompt plan, also in `decode` and `prompt`: timed on their own,
    /// they give the recurrence's share of a step or a chunk.
    pub recurrence: Recurrence,
    pub weight_bytes_per_token: u64,
    pub held_bytes: u64,
    pub pending: BTreeMap<String, Pending>,
}

/// Makes every buffer and launch of `spec` for up to `max_ctx` positions.
pub fn build(gpu: &Gpu, header: &Gguf, spec: &ModelSpec, max_ctx: usize) -> Result<Plan, GpuError> {
    let s = spec;
    let kernels = Kernels::new(gpu);
    let k = &kernels;
    let mut b = Held {
        gpu,
        header,
        bytes: 0,
        matrix_bytes: 0,
        pending: BTreeMap::new(),
    };
    let acts = Acts::new(&mut b, s, gpu.paths.f16_kv);
    let logits = b.scratch(s.n_vocab);
    let result = b.buffer(gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("result"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    }));
    let read_buffer = |size: u64| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let logits_read = read_buffer((s.n_vocab * 4) as u64);
    let result_read = read_buffer(16);
    let steps = Steps::new(gpu, k, CHUNK);

    let token_embd = b.matrix(TensorId::global(Role::TokenEmbd))?;
    let embed = k.embed_launches(gpu, &token_embd, s.embd_scale, &acts.x, Output::Store)?;
    let position_embd = if s.arch.learned_positions {
        Some(b.matrix(TensorId::global(Role::PositionEmbd))?)
    } else {
        None
    };
    let positions = match &position_embd {
        Some(table) => k.embed_launches(gpu, table, 1.0, &acts.x, Output::Add)?,
        None => Vec::new(),
    };
    let norm_of = |b: &mut Held, id| b.norm(id, s.norm_bias(id));
    let output_norm = norm_of(&mut b, TensorId::global(s.output_norm))?;
    let head_matrix = if s.tied_output() {
        token_embd.clone()
    } else {
        b.matrix(TensorId::global(Role::Output))?
    };
    let recurrent_parts: Vec<_> = s
        .layers
        .iter()
        .filter_map(|l| l.mixer.recurrent_state())
        .collect();
    let recurrent = RecurrentState::new(gpu, &recurrent_parts)?;
    b.bytes += recurrent.bytes();
    let norm = NormParams {
        n: s.n_embd as u32,
        eps: s.rms_eps,
        step_row: 0,
        add: 0,
        centred: 0,
        _pad: [0; 3],
    };
    let mut lower = Lowering {
        gpu,
        k,
        spec: s,
        acts,
        max_ctx,
        tables: Vec::new(),
        norm,
        recurrence: Recurrence::default(),
    };
    let mut plans = Plans::default();
    let mut states = recurrent.layers.iter();
    for (l, layer) in s.layers.iter().enumerate() {
        let attn_norm = norm_of(&mut b, TensorId::layer(l, Role::AttnNorm))?;
        let mut post_norm = |role| {
            layer
                .post_norms
                .then(|| norm_of(&mut b, TensorId::layer(l, role)))
                .transpose()
        };
        let [post_mixer, post_ffn] = [
            post_norm(Role::PostAttnNorm)?,
            post_norm(Role::FfnPostNorm)?,
        ];
        lower.norm(&mut plans, &attn_norm)?;
        match &layer.mixer {
            Mixer::Attention(a) => {
                lower.attention(&mut b, &mut plans, l, a, post_mixer.as_ref())?
            }
            Mixer::DeltaNet(d) => {
                let state = states.next().expect("a state per recurrent layer");
                lower.delta_net(&mut b, &mut plans, l, d, state, post_mixer.as_ref())?
            }
            Mixer::ShortConv(c) => {
                let state = states.next().expect("a state per recurrent layer");
                lower.short_conv(&mut b, &mut plans, l, c, &state[0], post_mixer.as_ref())?
            }
        }
        let ffn_norm = norm_of(&mut b, TensorId::layer(l, layer.ffn_norm))?;
        lower.norm(&mut plans, &ffn_norm)?;
        lower.feed_forward(&mut b, &mut plans, l, &layer.ffn, post_ffn.as_ref())?;
    }
    // Each factor tensor shapes the tables of the ropes that read it in this context. The
    // model's every tensor arrives, LongRoPE's set that another context would take too: it
    // shapes no table here.
    let expected = s.expected_tensors();
    for role in [
        Role::RopeFreqs,
        Role::RopeFactorsLong,
        Role::RopeFactorsShort,
    ] {
        let id = TensorId::global(role);
        if !expected.iter().any(|(e, _)| *e == id) {
            continue;
        }
        let tables: Vec<_> = lower
            .tables
            .iter()
            .filter(|(r, _)| r.factors(max_ctx) == Some(role))
            .cloned()
            .collect();
        b.expect(id, Target::RopeTables(tables))?;
    }

    let a = &lower.acts;
    // The output norm reads the row of the step it is bound to: a chunk's last token.
    let head_norm = NormParams {
        step_row: 1,
        ..lower.norm_params(&output_norm)
    };
    let mut head = vec![k.rms_norm_launch(gpu, head_norm, 1, &a.x, &output_norm.buffer, &a.h)];
    head.extend(k.product_launches(
        gpu,
        &head_matrix,
        1,
        &a.h,
        &logits,
        None,
        Output::Store,
        (0, 0),
    )?);
    let mask = token_mask(gpu, s.n_vocab);
    let argmax =
        [false, true].map(|m| k.argmax_launch(gpu, s.n_vocab, &logits, &result, (&mask, m)));
    let top = k.top_launches(gpu, s.n_vocab, &logits, &mask);
    let top_read = read_buffer((TOP_K * 8) as u64);
    // Every matrix is read once a token except the embedding, of which one row is, unless it
    // is also the head, and the learned positions, of which one row is.
    let weight_bytes_per_token = if s.tied_output() {
        b.matrix_bytes
    } else {
        b.matrix_bytes - token_embd.bytes()
    } - position_embd.map_or(0, |m| m.bytes());
    let held_bytes = b.bytes
        + steps.bytes()
        + logits_read.size()
        + result_read.size()
        + top.result.size()
        + top_read.size()
        + mask.size();
    Ok(Plan {
        steps,
        embed,
        positions,
        decode: plans.decode,
        prompt: plans.prompt,
        head,
        argmax,
        mask,
        top,
        top_read,
        logits,
        logits_read,
        result,
        result_read,
        recurrent,
        recurrence: lower.recurrence,
        weight_bytes_per_token,
        held_bytes,
        pending: b.pending,
    })
}
