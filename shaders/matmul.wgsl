// Y = X W^T (+ bias) for the step.count input rows of a prompt chunk: each weight unit is
// decoded once for a tile of TILE tokens instead of once per token, which is what makes a prompt
// cheaper than as many decode steps. Rows, lanes and the order of every sum are those of
// matvec.wgsl's unit path with one row per thread, so each token's result equals a decode step's
// there (the K-quants' super-block path sums in another order). Workgroup z picks the token
// tile; output row t goes to t * M.y_stride, or into the KV cache at (step.pos + t) *
// M.pos_stride. Needs quant.wgsl, product_out.wgsl and common.wgsl; the loader defines LANES
// and ROWS as for matvec.wgsl.

// Rows of x are `M.cols` apart, which need not be a multiple of 4: read as scalars.
@group(1) @binding(2) var<storage, read> x: array<f32>;

const TILE: u32 = 8u;

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
        let sum = reduce_lanes(li, lane, acc[t]);
        // The next reduction reuses workgroup memory that this one's lanes may still read.
        workgroupBarrier();
        if (lane == 0u && row < M.rows && t < n) {
            let r = M.row_offset + row;
            var o = (t0 + t) * M.y_stride + r;
            if (M.pos_stride != 0u) {
                o = cache_slot(step.pos + t0 + t) * M.pos_stride + r;
            }
            write_out(o, r, sum);
        }
    }
}
