// The gated delta rule and the gated RMS norm of a delta-net layer, token by token over the
// step.count rows bound (a decode step's one row): one workgroup per value head, one thread
// per column j of the head's DK x DV state, which the thread keeps in registers. Per token t:
//   q, k = L2-normalised key head (h % n_k) of the convolved row, q scaled by q_scale
//   S    = S * exp(a * softplus(alpha + dt));  S[:, j] += k * (v[j] - S[:, j].k) * sigmoid(beta)
//   o[j] = S[:, j].q;  out = rms_norm(o) * norm * silu(z)
// Prompts take the chunked form instead (delta_prep.wgsl, delta_chunk.wgsl). DV <= 256, the
// workgroup size. Needs delta.wgsl.

var<workgroup> qs: array<f32, DK>;
var<workgroup> ks: array<f32, DK>;
var<workgroup> os: array<f32, DV>;

@compute @workgroup_size(DV)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let hk = h % D.n_k;
    var col = load_column(h, j);
    for (var t = 0u; t < step.count; t++) {
        for (var i = j; i < DK; i += DV) {
            qs[i] = q_at(t, hk, i);
            ks[i] = k_at(t, hk, i);
        }
        workgroupBarrier();
        var qq = 0.0;
        var kk = 0.0;
        for (var i = 0u; i < DK; i++) {
            qq += qs[i] * qs[i];
            kk += ks[i] * ks[i];
        }
        let qn = D.q_scale / sqrt(qq + L2_EPS);
        let kn = 1.0 / sqrt(kk + L2_EPS);
        let decay = exp(log_decay(t, h));
        let b = beta_gate(t, h);
        let v = v_at(t, h, j);
        var recalled = 0.0;
        for (var i = 0u; i < DK; i++) {
            col[i] *= decay;
            recalled += col[i] * ks[i];
        }
        let delta = (v - recalled * kn) * b;
        var o = 0.0;
        for (var i = 0u; i < DK; i++) {
            col[i] += ks[i] * kn * delta;
            o += col[i] * qs[i];
        }
        o *= qn;
        os[j] = o;
        workgroupBarrier();
        var ss = 0.0;
        for (var i = 0u; i < DV; i++) {
            ss += os[i] * os[i];
        }
        out[t * D.value_dim + h * DV + j] = gated(o, 1.0 / sqrt(ss / f32(DV) + D.eps), t, h, j);
        // The next token overwrites qs, ks and os.
        workgroupBarrier();
    }
    store_column(h, j, col);
}
