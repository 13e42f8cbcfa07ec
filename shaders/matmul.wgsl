// Y = X W^T (+ bias) for the step.count input rows of a prompt chunk: each weight unit is
// decoded once for a tile of TILE tokens instead of once per token, which is what makes a prompt
// cheaper than as many decode steps, and each input value read serves the RPT rows of its thread
// (on CPU devices, where every load is dear next to arithmetic). Rows, lanes and the order of
// every sum are those of matvec.wgsl's unit path, so each token's result equals a decode step's
// there (the K-quants' super-block path sums in another order). Workgroup z picks the token
// tile; output row t goes to t * M.y_stride, or into the KV cache at (step.pos + t) *
// M.pos_stride. Needs quant.wgsl, product_out.wgsl and common.wgsl; the loader defines LANES,
// RPT, ROWS, `row_lane` and the entry point as for matvec.wgsl, TILE, the input `x` (rows
// `M.cols` apart) and `x_unit(i)`, its values i..i + 32: read once per subgroup and broadcast
// where a row has one thread, vec4 loads where M.cols is a multiple of 4, else scalar loads.
// Every thread runs the sums (past the last row on its last row, dropped), so that subgroup
// operations see them all.

// Thread `li` of workgroup `group`, over the tokens of tile `tile`.
fn matmul(li: u32, group: u32, tile: u32) {
    let lane = row_lane(li);
    let first = group * ROWS + li / LANES * RPT;
    let t0 = tile * TILE;
    let n = min(TILE, step.count - min(t0, step.count));
    var acc: array<array<f32, TILE>, RPT>;
    let units = units_per_row();
    for (var u = lane; u < units; u += LANES) {
        var v: array<Unit, RPT>;
        for (var r = 0u; r < RPT; r++) {
            v[r] = unit(thread_row(first, r), u);
        }
        // Every token of the tile, whether or not the chunk has it, so that the loops have
        // constant bounds: what is read past the chunk's rows only reaches sums that are
        // dropped. Past the row's end the weights are zero: what is read there does not count.
        for (var t = 0u; t < TILE; t++) {
            let xs = x_unit((t0 + t) * M.cols + u * 32u);
            for (var k = 0u; k < 8u; k++) {
                for (var r = 0u; r < RPT; r++) {
                    acc[r][t] += dot(v[r].v[k], xs[k]);
                }
            }
        }
    }
    for (var r = 0u; r < RPT; r++) {
        for (var t = 0u; t < TILE; t++) {
            let sum = reduce_lanes(li, lane, acc[r][t]);
            // The next reduction reuses workgroup memory that this one's lanes may still read.
            workgroupBarrier();
            let row = first + r;
            if (lane == 0u && row < M.rows && t < n) {
                let o = M.row_offset + row;
                var at = (t0 + t) * M.y_stride + o;
                if (M.pos_stride != 0u) {
                    at = cache_slot(step.pos + t0 + t) * M.pos_stride + o;
                }
                write_out(at, o, sum);
            }
        }
    }
}
