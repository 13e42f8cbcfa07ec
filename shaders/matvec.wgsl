// y = W x (+ bias) for one input vector, decoding W's blocks in registers: the decode step is
// memory-bound, so each weight byte is read exactly once and never written back dequantized.
// A workgroup of 64 threads takes ROWS rows; the LANES threads of a row stride over its 32-value
// units, so consecutive threads read consecutive blocks. The loader defines LANES (16 for
// matrices with rows of 16 units or more; fewer for narrow ones, such as a head over a large
// vocabulary with a small hidden size, so lanes are not left idle) and ROWS = 64 / LANES.
// Needs quant.wgsl, product_out.wgsl and common.wgsl.

@group(1) @binding(2) var<storage, read> x: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = li % LANES;
    let row = (wg.x + wg.y * nwg.x) * ROWS + li / LANES;
    var acc = 0.0;
    if (row < M.rows) {
        let units = units_per_row();
        for (var u = lane; u < units; u += LANES) {
            let v = unit(row, u);
            for (var k = 0u; k < 8u; k++) {
                acc += dot(v.v[k], x[u * 8u + k]);
            }
        }
    }
    acc = reduce_lanes(li, lane, acc);
    if (lane == 0u && row < M.rows) {
        let r = M.row_offset + row;
        write_out(cache_slot(step.pos) * M.pos_stride + r, r, acc);
    }
}
