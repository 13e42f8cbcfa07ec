// Y = X W^T (+ bias) for the step.count input rows of a prompt chunk: each weight unit is
// decoded once for a tile of TILE tokens instead of once per token, which is what makes a prompt
// cheaper than as many decode steps. Rows, lanes and the order of every sum are matvec.wgsl's,
// so each token's result equals its decode step's. Workgroup z picks the token tile; output row
// t goes to t * M.y_stride, or into the KV cache at (step.pos + t) * M.pos_stride. Needs
// quant.wgsl and common.wgsl; the loader defines LANES and ROWS as for matvec.wgsl.

// Rows of x are `M.cols` apart, which need not be a multiple of 4: read as scalars.
@group(1) @binding(2) var<storage, read> x: array<f32>;
@group(1) @binding(3) var<storage, read_write> y: array<f32>;
@group(1) @binding(4) var<storage, read> bias: array<f32>;

const TILE: u32 = 8u;

var<workgroup> partial: array<f32, 64>;

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = li % LANES;
    let row = (wg.x + wg.y * nwg.x) * ROWS + li / LANES;
    let t0 = wg.z * TILE;
    let n = min(TILE, step.count - min(t0, step.count));
    var acc: array<f32, 8>;
    if (row < M.rows) {
        let units = units_per_row();
        for (var u = lane; u < units; u += LANES) {
            let v = unit(row, u);
            for (var t = 0u; t < n; t++) {
                // Past the row's end the weights are zero: what is read there does not count.
                let xb = (t0 + t) * M.cols + u * 32u;
                for (var k = 0u; k < 8u; k++) {
                    let i = xb + 4u * k;
                    acc[t] += dot(v.v[k], vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]));
                }
            }
        }
    }
    for (var t = 0u; t < TILE; t++) {
        var sum = reduce_lanes(li, lane, acc[t]);
        // The next reduction reuses workgroup memory that this one's lanes may still read.
        workgroupBarrier();
        if (lane == 0u && row < M.rows && t < n) {
            let r = M.row_offset + row;
            if (M.has_bias != 0u) {
                sum += bias[r];
            }
            var o = (t0 + t) * M.y_stride + r;
            if (M.pos_stride != 0u) {
                o = (step.pos + t0 + t) * M.pos_stride + r;
            }
            switch M.mode {
                case 1u: { y[o] += sum; }
                case 2u: { y[o] = silu(y[o]) * sum; }
                default: { y[o] = sum; }
            }
        }
    }
}
