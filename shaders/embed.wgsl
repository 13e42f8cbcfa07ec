// Embedding lookup: row `step.token - M.row_offset` of a (possibly quantized) table, decoded
// and multiplied by `M.out_scale` (Gemma's sqrt(n_embd), else 1) into row `step.row` of `out`;
// with M.mode 1 (add), row `step.pos - M.row_offset` added to it instead (learned positions).
// One thread per 32-value unit. Needs quant.wgsl and common.wgsl.

@group(1) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let u = gid.x;
    if (u >= units_per_row()) {
        return;
    }
    let add = M.mode == 1u;
    let v = unit(select(step.token, step.pos, add) - M.row_offset, u);
    for (var i = 0u; i < 32u; i++) {
        let c = u * 32u + i;
        if (c < M.cols) {
            let o = step.row * M.cols + c;
            out[o] = select(0.0, out[o], add) + v.v[i / 4u][i % 4u] * M.out_scale;
        }
    }
}
