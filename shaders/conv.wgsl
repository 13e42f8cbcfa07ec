// The causal depthwise convolution of a delta-net layer (then SiLU) or of a short-convolution
// layer (without), in place over the step.count rows of x (a prompt chunk bound to its first step, or one decode row): one thread
// per channel walks the tokens in order, carrying the channel's last `kernel - 1` inputs in
// `state` (oldest first, `channels` apart). Needs common.wgsl.

struct Conv {
    channels: u32,
    kernel: u32,
    silu: u32,
    _pad: u32,
}

@group(1) @binding(0) var<uniform> C: Conv;
@group(1) @binding(1) var<storage, read_write> x: array<f32>;
@group(1) @binding(2) var<storage, read> weight: array<f32>;
@group(1) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= C.channels) {
        return;
    }
    let k = C.kernel;
    let w = c * k;
    for (var t = 0u; t < step.count; t++) {
        let xi = x[t * C.channels + c];
        var sum = weight[w + k - 1u] * xi;
        for (var j = 0u; j + 1u < k; j++) {
            sum += weight[w + j] * state[j * C.channels + c];
        }
        for (var j = 0u; j + 2u < k; j++) {
            state[j * C.channels + c] = state[(j + 1u) * C.channels + c];
        }
        state[(k - 2u) * C.channels + c] = xi;
        if (C.silu != 0u) {
            sum = sum / (1.0 + exp(-sum));
        }
        x[t * C.channels + c] = sum;
    }
}
