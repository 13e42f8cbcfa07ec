// The output of the matrix kernels (matvec.wgsl, matmul.wgsl): row r of the product, plus its
// bias, stored into, added to, multiplied by silu or gelu of y[o], gating y[o] by its sigmoid,
// or multiplying y[o], or stored through GELU, as M.mode says. Also the workgroup memory their
// lane reductions use. Needs quant.wgsl.

@group(1) @binding(3) var<storage, read_write> y: array<f32>;
@group(1) @binding(4) var<storage, read> bias: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

// GELU, tanh approximation (ggml's ggml_gelu, Hugging Face's gelu_new). tanh's argument is
// clamped where tanh is already +-1 in f32: some tanh implementations overflow past it.
fn gelu(v: f32) -> f32 {
    let t = clamp(0.7978845608 * v * (1.0 + 0.044715 * v * v), -10.0, 10.0);
    return 0.5 * v * (1.0 + tanh(t));
}

// Row r of the thread whose rows start at `first`: past the matrix's end, its last row again
// (read, so that every thread runs the same code, and dropped).
fn thread_row(first: u32, r: u32) -> u32 {
    return min(first + r, M.rows - 1u);
}

fn write_out(o: u32, r: u32, value: f32) {
    var v = value;
    if (M.has_bias != 0u) {
        v += bias[r];
    }
    switch M.mode {
        case 1u: { y[o] += v; }
        case 2u: { y[o] = silu(y[o]) * v; }
        case 3u: { y[o] = y[o] / (1.0 + exp(-v)); }
        case 4u: { y[o] *= v; }
        case 5u: { y[o] = gelu(v); }
        case 6u: { y[o] = gelu(y[o]) * v; }
        default: { y[o] = v; }
    }
}
