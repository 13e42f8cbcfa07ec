//! Lowering each layer of the description: attention, the delta net, the short convolution and
//! the feed-forward block, each operation written once as a function of the rows it runs over.

use hearth_core::model::{
    Attention, DeltaNet, Ffn, ModelSpec, Role, Rope, RopeStyle, ShortConv, TensorId,
};

use crate::kernels::{uniform, AttnParams, Kernels, NormParams, Output, RopeParams};
use crate::weights::GpuMatrix;
use crate::{Gpu, GpuError};

use super::held::{Held, NormWeights};
use super::plans::{Acts, Plans, Recurrence, CHUNK};

/// The rope (cos, sin) table of `rope` for positions `0..max_ctx`, the reference's values.
pub fn rope_table(rope: &Rope, freqs: Option<&[f32]>, max_ctx: usize) -> Vec<f32> {
    (0..max_ctx)
        .flat_map(|pos| rope.cos_sin(pos, freqs))
        .flatten()
        .collect()
}

/// Slots of layer `a`'s KV cache for up to `max_ctx` positions: a sliding window keeps a ring
/// of the window and a chunk's rows, since a chunk stores all its keys before its first row,
/// which needs the window before it, attends.
pub fn kv_slots(a: &Attention, max_ctx: usize) -> usize {
    a.cache_slots(max_ctx, CHUNK)
}

/// A matrix product as (matrix, input, output, bias, output mode, KV cache (stride, slots)).
type Product<'a> = (
    &'a GpuMatrix,
    &'a wgpu::Buffer,
    &'a wgpu::Buffer,
    Option<&'a wgpu::Buffer>,
    Output,
    (usize, usize),
);

/// What lowering a layer needs besides the layer.
pub(super) struct Lowering<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) k: &'a Kernels,
    pub(super) spec: &'a ModelSpec,
    pub(super) acts: Acts,
    pub(super) max_ctx: usize,
    /// Rope tables by rope, shared by the layers with the same one.
    pub(super) tables: Vec<(Rope, wgpu::Buffer)>,
    pub(super) norm: NormParams,
    pub(super) recurrence: Recurrence,
}

impl Lowering<'_> {
    pub(super) fn products(&self, plans: &mut Plans, list: &[Product]) -> Result<(), GpuError> {
        for &(m, x, y, bias, mode, cache) in list {
            plans.both(|rows| {
                self.k
                    .product_launches(self.gpu, m, rows, x, y, bias, mode, cache)
            })?;
        }
        Ok(())
    }

    /// The residual `x` normed into `h`, the input of the next block.
    pub(super) fn norm(&self, plans: &mut Plans, weights: &NormWeights) -> Result<(), GpuError> {
        let a = &self.acts;
        self.norm_rows(plans, self.norm_params(weights), weights, &a.x, &a.h)
    }

    fn norm_rows(
        &self,
        plans: &mut Plans,
        params: NormParams,
        weights: &NormWeights,
        input: &wgpu::Buffer,
        output: &wgpu::Buffer,
    ) -> Result<(), GpuError> {
        plans.both(|rows| {
            Ok(vec![self.k.rms_norm_launch(
                self.gpu,
                params,
                rows,
                input,
                &weights.buffer,
                output,
            )])
        })
    }

    /// The norm launch's parameters for `weights`: centred where they have a bias.
    pub(super) fn norm_params(&self, weights: &NormWeights) -> NormParams {
        NormParams {
            centred: weights.centred as u32,
            ..self.norm
        }
    }

    /// A block's output projection `m` of `input` (plus `bias`) into the residual: added to `x`, or with a
    /// post-norm, stored in `h` (free once the block's products have read it), normed and
    /// added.
    fn residual(
        &self,
        plans: &mut Plans,
        m: &GpuMatrix,
        input: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        post_norm: Option<&NormWeights>,
    ) -> Result<(), GpuError> {
        let a = &self.acts;
        let Some(weights) = post_norm else {
            return self.products(plans, &[(m, input, &a.x, bias, Output::Add, (0, 0))]);
        };
        self.products(plans, &[(m, input, &a.h, bias, Output::Store, (0, 0))])?;
        let params = NormParams {
            add: 1,
            ..self.norm_params(weights)
        };
        self.norm_rows(plans, params, weights, &a.h, &a.x)
    }

    /// The rope table of `rope`, made once for all the layers that share it.
    pub(super) fn table(&mut self, b: &mut Held, rope: &Rope) -> wgpu::Buffer {
        if let Some((_, t)) = self.tables.iter().find(|(r, _)| r == rope) {
            return t.clone();
        }
        let t = if rope.factors(self.max_ctx).is_some() {
            // Written once the factors arrive.
            b.scratch(self.max_ctx * rope.dim)
        } else {
            b.f32s(&rope_table(rope, None, self.max_ctx))
        };
        self.tables.push((*rope, t.clone()));
        t
    }

    pub(super) fn attention(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        a: &Attention,
        post_norm: Option<&NormWeights>,
    ) -> Result<(), GpuError> {
        let id = |role| TensorId::layer(l, role);
        let gpu = self.gpu;
        let (s, f16_kv) = (self.spec, gpu.paths.f16_kv);
        // A fused projection's rows (and its bias's values): Q's, K's, then V's.
        let lens = a.fused_qkv_parts().map(|(_, _, n)| n);
        let (wq, wgate, wk, wv) = if a.fused_qkv {
            let [wq, wk, wv] = b.split(id(Role::AttnQkv), lens)?;
            (wq, None, wk, wv)
        } else {
            let (wq, wgate) = if a.output_gate {
                let mut parts = b.dealt(id(Role::AttnQ), a.head_dim, 2)?.into_iter();
                (parts.next().unwrap(), parts.next())
            } else {
                (b.matrix(id(Role::AttnQ))?, None)
            };
            let [wk, wv] = b.matrices(l, [Role::AttnK, Role::AttnV])?;
            (wq, wgate, wk, wv)
        };
        let [wo] = b.matrices(l, [Role::AttnOutput])?;
        let fused_bias = (a.qkv_bias && a.fused_qkv)
            .then(|| b.split_vector(id(Role::AttnQkvBias), lens))
            .transpose()?;
        let mut opt = |on: bool, role| on.then(|| b.vector(id(role))).transpose();
        let separate = a.qkv_bias && !a.fused_qkv;
        let [bq, bk, bv] = match fused_bias {
            Some(parts) => parts.map(Some),
            None => [
                opt(separate, Role::AttnQBias)?,
                opt(separate, Role::AttnKBias)?,
                opt(separate, Role::AttnVBias)?,
            ],
        };
        let bo = opt(a.out_bias, Role::AttnOutputBias)?;
        let q_norm = opt(a.qk_norm, Role::AttnQNorm)?;
        let k_norm = opt(a.qk_norm, Role::AttnKNorm)?;
        let kv_value_bytes = if f16_kv { 2 } else { 4 };
        let slots = kv_slots(a, self.max_ctx);
        let kv_bytes = (slots * a.k_dim().max(a.v_dim()) * kv_value_bytes) as u64;
        if kv_bytes > gpu.max_binding {
            return Err(GpuError::TooLarge {
                what: format!("the KV cache of one layer for {} positions", self.max_ctx),
                bytes: kv_bytes,
                limit: gpu.max_binding,
            });
        }
        // f16 values are stored two to a word.
        let mut cache = |n: usize| b.scratch(n.div_ceil(4 / kv_value_bytes));
        let kc = cache(slots * a.k_dim());
        let vc = cache(slots * a.v_dim());
        let table = a.rope.map(|rope| self.table(b, &rope));

        let acts = &self.acts;
        // Where the K and V products go: the cache at the token's position, or a row of the
        // f16 path's staging buffers.
        let (k_out, v_out, k_cache, v_cache) = match &acts.kv_rows {
            Some((kr, vr)) => (kr, vr, (0, 0), (0, 0)),
            None => (&kc, &vc, (a.k_dim(), slots), (a.v_dim(), slots)),
        };
        self.products(
            plans,
            &[
                (&wq, &acts.h, &acts.q, bq.as_ref(), Output::Store, (0, 0)),
                (&wk, &acts.h, k_out, bk.as_ref(), Output::Store, k_cache),
                (&wv, &acts.h, v_out, bv.as_ref(), Output::Store, v_cache),
            ],
        )?;
        let k = self.k;
        // A layer without rope (NoPE) launches nothing here unless it norms the heads of Q and
        // K, which a launch that rotates no dimension does.
        if a.rope.is_some() || a.qk_norm {
            let rope_params = RopeParams {
                head_dim: a.head_dim as u32,
                rope_dim: a.rope.map_or(0, |r| r.dim as u32),
                neox: a.rope.is_some_and(|r| r.style == RopeStyle::Neox) as u32,
                has_norm: 0,
                eps: s.rms_eps,
                pos_stride: 0,
                row_stride: a.q_dim() as u32,
                pos_ring: 0,
            };
            // K is roped where it lies: in the cache (f32), or in its chunk row before it is
            // rounded into the cache (f16).
            let k_rope_params = RopeParams {
                pos_stride: if f16_kv { 0 } else { a.k_dim() as u32 },
                row_stride: if f16_kv { a.k_dim() as u32 } else { 0 },
                pos_ring: if f16_kv { 0 } else { slots as u32 },
                ..rope_params
            };
            let table = table.as_ref();
            plans.both(|rows| {
                Ok(vec![
                    k.rope_launch(
                        gpu,
                        rope_params,
                        (a.n_head, rows),
                        &acts.q,
                        q_norm.as_ref(),
                        table,
                    ),
                    k.rope_launch(
                        gpu,
                        k_rope_params,
                        (a.n_head_kv, rows),
                        k_out,
                        k_norm.as_ref(),
                        table,
                    ),
                ])
            })?;
        }
        if let Some((kr, vr)) = &acts.kv_rows {
            plans.both(|rows| {
                Ok(vec![k.kv_store_launch(
                    gpu,
                    [a.k_dim(), a.v_dim(), slots],
                    rows,
                    [kr, vr, &kc, &vc],
                )])
            })?;
        }
        let params = uniform(
            gpu,
            &AttnParams {
                n_head: a.n_head as u32,
                group: (a.n_head / a.n_head_kv) as u32,
                head_dim: a.head_dim as u32,
                head_dim_v: a.head_dim_v as u32,
                k_dim: a.k_dim() as u32,
                v_dim: a.v_dim() as u32,
                window: a.window.map_or(0, |w| w as u32),
                scale: a.scale,
                ring: slots as u32,
                _pad: [0; 3],
            },
        );
        plans.both(|rows| {
            Ok(vec![k.attention_launch(
                gpu,
                (&params, a.head_dim, a.head_dim_v),
                a.n_head,
                rows,
                [&acts.q, &kc, &vc, &acts.att],
            )])
        })?;
        if let Some(wgate) = &wgate {
            let gate = (wgate, &acts.h, &acts.att, None, Output::SigmoidGate, (0, 0));
            self.products(plans, &[gate])?;
        }
        self.residual(plans, &wo, &acts.att, bo.as_ref(), post_norm)
    }

    pub(super) fn delta_net(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        d: &DeltaNet,
        state: &[wgpu::Buffer],
        post_norm: Option<&NormWeights>,
    ) -> Result<(), GpuError> {
        let [conv_state, delta_state] = state else {
            unreachable!("a delta net's state has two parts")
        };
        let id = |role| TensorId::layer(l, role);
        let gpu = self.gpu;
        let [wqkv, wz, wbeta, walpha, wout] = b.matrices(
            l,
            [
                Role::AttnQkv,
                Role::AttnGate,
                Role::SsmBeta,
                Role::SsmAlpha,
                Role::SsmOut,
            ],
        )?;
        let conv_w = b.vector(id(Role::SsmConv1d))?;
        let nv = d.n_v_heads;
        let params = b.scratch(2 * nv + d.head_v_dim);
        b.vector_at(id(Role::SsmDt), &params, 0)?;
        b.vector_at(id(Role::SsmA), &params, nv)?;
        b.vector_at(id(Role::SsmNorm), &params, 2 * nv)?;
        let a = &self.acts;
        self.products(
            plans,
            &[
                (&wqkv, &a.h, &a.qkv, None, Output::Store, (0, 0)),
                (&wz, &a.h, &a.z, None, Output::Store, (0, 0)),
                (&wbeta, &a.h, &a.beta, None, Output::Store, (0, 0)),
                (&walpha, &a.h, &a.alpha, None, Output::Store, (0, 0)),
            ],
        )?;
        let k = self.k;
        let eps = self.spec.rms_eps;
        let conv = (d.conv_dim(), d.conv_kernel, true);
        // The convolution walks the rows of the chunk it is bound to.
        self.recurrence.record(plans, |rows| {
            let mut launches = vec![k.conv_launch(gpu, conv, [&a.qkv, &conv_w, conv_state])];
            launches.extend(k.delta_launches(
                gpu,
                d,
                eps,
                rows,
                [
                    &a.qkv,
                    &a.z,
                    &a.beta,
                    &a.alpha,
                    &params,
                    delta_state,
                    &a.att,
                    &a.wy,
                ],
            )?);
            Ok(launches)
        })?;
        let a = &self.acts;
        self.residual(plans, &wout, &a.att, None, post_norm)
    }

    /// The gated short convolution: `B * x` into the `qkv` rows, the convolution over them in
    /// place, then `C` times its output, projected into the residual.
    pub(super) fn short_conv(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        c: &ShortConv,
        conv_state: &wgpu::Buffer,
        post_norm: Option<&NormWeights>,
    ) -> Result<(), GpuError> {
        let id = |role| TensorId::layer(l, role);
        let gpu = self.gpu;
        // The input projection's rows are [B | C | x], `channels` each.
        let mut parts = b
            .dealt(id(Role::ShortConvInProj), c.channels, 3)?
            .into_iter();
        let [wb, wc, wx] = [(); 3].map(|_| parts.next().expect("three parts"));
        let wout = b.matrix(id(Role::ShortConvOutProj))?;
        let conv_w = b.vector(id(Role::ShortConvConv))?;
        let a = &self.acts;
        self.products(
            plans,
            &[
                (&wb, &a.h, &a.qkv, None, Output::Store, (0, 0)),
                (&wx, &a.h, &a.qkv, None, Output::Mul, (0, 0)),
            ],
        )?;
        let k = self.k;
        let conv = (c.channels, c.conv_kernel, false);
        self.recurrence.record(plans, |_| {
            Ok(vec![k.conv_launch(
                gpu,
                conv,
                [&a.qkv, &conv_w, conv_state],
            )])
        })?;
        let a = &self.acts;
        self.products(plans, &[(&wc, &a.h, &a.qkv, None, Output::Mul, (0, 0))])?;
        self.residual(plans, &wout, &a.qkv, None, post_norm)
    }

    pub(super) fn feed_forward(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        ffn: &Ffn,
        post_norm: Option<&NormWeights>,
    ) -> Result<(), GpuError> {
        let gate_mode = match ffn {
            Ffn::SiluGated { .. } | Ffn::SiluGatedFused { .. } => Output::SiluGate,
            Ffn::GeluGated { .. } => Output::GeluGate,
            Ffn::Gelu { .. } => Output::Gelu,
        };
        let [gate, up, down] = match ffn {
            Ffn::SiluGated { .. } | Ffn::GeluGated { .. } => {
                b.matrices(l, [Role::FfnGate, Role::FfnUp, Role::FfnDown])?
            }
            Ffn::SiluGatedFused { .. } => {
                let parts = ffn.fused_parts().expect("a fused block has parts");
                let [gate, up] = b.split(TensorId::layer(l, Role::FfnUp), parts.map(|(_, n)| n))?;
                [gate, up, b.matrix(TensorId::layer(l, Role::FfnDown))?]
            }
            Ffn::Gelu { .. } => {
                // Ungated: the up product goes through GELU, and both products add biases.
                let [up, down] = b.matrices(l, [Role::FfnUp, Role::FfnDown])?;
                let bu = b.vector(TensorId::layer(l, Role::FfnUpBias))?;
                let bd = b.vector(TensorId::layer(l, Role::FfnDownBias))?;
                let a = &self.acts;
                let up = (&up, &a.h, &a.ffn, Some(&bu), gate_mode, (0, 0));
                self.products(plans, &[up])?;
                return self.residual(plans, &down, &a.ffn, Some(&bd), post_norm);
            }
        };
        let a = &self.acts;
        self.products(
            plans,
            &[
                (&gate, &a.h, &a.ffn, None, Output::Store, (0, 0)),
                (&up, &a.h, &a.ffn, None, gate_mode, (0, 0)),
            ],
        )?;
        self.residual(plans, &down, &a.ffn, None, post_norm)
    }
}
