// The chunked (WY) form of the gated delta rule over a prompt chunk, part two: one workgroup
// per value head walks the sub-chunks in order, one thread per column j of the head's
// DK x DV state, kept in registers. With the records of delta_prep.wgsl, per sub-chunk that
// starts from state S:
//   d_i     = U_i - W_i . S[:, j]
//   o_i[j]  = exp(G_i) q_i . S[:, j] + sum_{m <= i} P[i][m] d_m
//   S[:, j] = exp(G_last) S[:, j] + sum_m exp(G_last - G_m) k_m d_m
// Four barriers a sub-chunk, where the token-by-token form (delta_net.wgsl) takes three a
// token; the gated RMS norm of each row follows once every row is out, a thread per row.
// SUB x DK fits the 16 KiB of workgroup memory WebGPU guarantees. Needs delta.wgsl.

var<workgroup> rows: array<f32, SUB * DK>;

@compute @workgroup_size(DV)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let hk = h % D.n_k;
    var col = load_column(h, j);
    for (var first = 0u; first < step.count; first += SUB) {
        let n = min(SUB, step.count - first);
        for (var e = j; e < n * DK; e += DV) {
            rows[e] = wy[rec(first + e / DK, h) + e % DK];
        }
        workgroupBarrier();
        var d: array<f32, SUB>;
        for (var i = 0u; i < n; i++) {
            var acc = wy[rec(first + i, h) + DK + j];
            for (var c = 0u; c < DK; c++) {
                acc -= rows[i * DK + c] * col[c];
            }
            d[i] = acc;
        }
        workgroupBarrier();
        for (var e = j; e < n * DK; e += DV) {
            let t = first + e / DK;
            rows[e] = q_at(t, hk, e % DK) * wy[rec(t, h) + REC_G + 1u];
        }
        workgroupBarrier();
        for (var i = 0u; i < n; i++) {
            let r = rec(first + i, h);
            var o = 0.0;
            for (var c = 0u; c < DK; c++) {
                o += rows[i * DK + c] * col[c];
            }
            o *= exp(wy[r + REC_G]);
            for (var m = 0u; m <= i; m++) {
                o += wy[r + REC_P + m] * d[m];
            }
            out[(first + i) * D.value_dim + h * DV + j] = o;
        }
        workgroupBarrier();
        let g_last = wy[rec(first + n - 1u, h) + REC_G];
        for (var e = j; e < n * DK; e += DV) {
            let r = rec(first + e / DK, h);
            rows[e] = k_at(first + e / DK, hk, e % DK) * wy[r + REC_G + 2u]
                * exp(g_last - wy[r + REC_G]);
        }
        workgroupBarrier();
        let decay = exp(g_last);
        for (var c = 0u; c < DK; c++) {
            var acc = col[c] * decay;
            for (var m = 0u; m < n; m++) {
                acc += rows[m * DK + c] * d[m];
            }
            col[c] = acc;
        }
        // The next sub-chunk overwrites rows.
        workgroupBarrier();
    }
    store_column(h, j, col);
    // Every thread's outputs of the chunk are written: norm them, a row per thread.
    storageBarrier();
    for (var t = j; t < step.count; t += DV) {
        let at = t * D.value_dim + h * DV;
        var ss = 0.0;
        for (var c = 0u; c < DV; c++) {
            ss += out[at + c] * out[at + c];
        }
        let r = 1.0 / sqrt(ss / f32(DV) + D.eps);
        for (var c = 0u; c < DV; c++) {
            out[at + c] = gated(out[at + c], r, t, h, c);
        }
    }
}
