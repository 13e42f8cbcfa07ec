// y = W x (+ bias) for one input vector, decoding W's blocks in registers: the decode step is
// memory-bound, so each weight byte is read exactly once and never written back dequantized.
// A workgroup of 64 threads takes ROWS rows in groups of LANES threads, each group RPT
// consecutive rows (ROWS = 64 / LANES * RPT): every input value a thread reads serves its RPT
// rows. The LANES threads of a row stride over its 32-value units, so consecutive threads read
// consecutive blocks, or, for the K-quants with a kernel of their own (superblock.wgsl), over its
// 256-value super-blocks. The loader defines LANES (fewer for narrow rows, such as a head over a
// large vocabulary with a small hidden size, so lanes are not left idle), RPT, ROWS, `lane_sums`,
// which picks the path, the input `x` with `x8` (below), `row_lane` and the entry point, which
// calls `matvec`. Needs quant.wgsl, product_out.wgsl and common.wgsl.
//
// x8(i, step) is x[i + k % 4 + step * (k / 4)] for k = 0..8: read by each thread, or, where a
// subgroup's threads all want the same values (one lane per row, LANES = 1), read once per
// subgroup, a vec4 by each of its first eight lanes, and broadcast. On CPU devices every load
// is a loop over the SIMD lanes, so that turns eight loads into one. Every thread runs the sums
// (past the last row on its last row, dropped), so that subgroup operations see them all.

// One thread's partial sums, one per row.
alias Sums = array<f32, RPT>;

// The lane's share of the thread's rows, over 32-value units.
fn unit_sums(first: u32, lane: u32) -> Sums {
    var acc: Sums;
    let units = units_per_row();
    for (var u = lane; u < units; u += LANES) {
        let xs = x8(u * 8u, 4u);
        for (var r = 0u; r < RPT; r++) {
            let v = unit(thread_row(first, r), u);
            for (var k = 0u; k < 8u; k++) {
                acc[r] += dot(v.v[k], xs[k]);
            }
        }
    }
    return acc;
}

// Thread `li` of workgroup `group`.
fn matvec(li: u32, group: u32) {
    let lane = row_lane(li);
    let first = group * ROWS + li / LANES * RPT;
    let acc = lane_sums(first, lane);
    for (var r = 0u; r < RPT; r++) {
        let sum = reduce_lanes(li, lane, acc[r]);
        let row = first + r;
        if (lane == 0u && row < M.rows) {
            let o = M.row_offset + row;
            write_out(cache_slot(step.pos) * M.pos_stride + o, o, sum);
        }
        if (RPT > 1u) {
            // The next reduction reuses workgroup memory that this one's lanes may still read.
            workgroupBarrier();
        }
    }
}
