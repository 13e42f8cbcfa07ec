// Matvec sums over whole 256-value super-blocks for Q4_K, Q5_K and Q6_K (composed after
// matvec.wgsl in place of its unit path): lane `lane` of a row takes super-blocks lane,
// lane + LANES, ...; each super-block's scales are read and decoded once and each of its words
// read once, rather than once per 32-value unit. Values decode as quant.wgsl's units do;
// Q6_K's sums are scaled per 16-value group, after the quants are summed against x.

// Each byte of `word` as a float.
fn byte_values(word: u32) -> vec4<f32> {
    return vec4<f32>(bytes_bits(word, 0u, 255u));
}

// Q6_K's 6-bit quants from a word of low nibbles and the high bits already in place, less 32.
fn q6(low: u32, high: u32) -> vec4<f32> {
    return byte_values((low & 0x0F0F0F0Fu) | high) - 32.0;
}

// One word of each of a Q6_K half's two low-nibble runs (a, c) and its high bits (e) against the
// input at their four values' places: a sum per 16-value group.
fn q6_groups(a: u32, c: u32, e: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        dot(q6(a, (e & 0x03030303u) << 4u), x0),
        dot(q6(c, (e & 0x0C0C0C0Cu) << 2u), x1),
        dot(q6(a >> 4u, e & 0x30303030u), x2),
        dot(q6(c >> 4u, (e >> 2u) & 0x30303030u), x3),
    );
}

// Q6_K (see unit_q6_k): ql[128], qh[64], scales[16] in 52 words (13 vec4s); d in the scale
// region. Half h of a super-block: value 128h + l + 32i (l < 32) has bits 2i and 2i + 1 of
// qh[32h + l] as its high two, the low (i < 2) or high nibble of ql[64h + l + 32 (i % 2)] as its
// low four, and scale 8h + l / 16 + 2i.
fn sums_q6_k(first: u32, lane: u32) -> Sums {
    var acc: Sums;
    for (var b = lane; b < M.cols / 256u; b += LANES) {
        // Per row: the super-block's first vec4, its d, and its scale words (vec4 12).
        var base: array<u32, RPT>;
        var d: array<f32, RPT>;
        var scales: array<vec4<u32>, RPT>;
        for (var r = 0u; r < RPT; r++) {
            let blk = super_block(thread_row(first, r), 8u * b);
            base[r] = blk * 13u;
            d[r] = f16_lo(word_at(M.scale_base + blk));
            scales[r] = w[base[r] + 12u];
        }
        for (var h = 0u; h < 2u; h++) {
            for (var s = 0u; s < 2u; s++) {
                // Word j of xa and xb is x[xo + j] and x[xo + 16 + j], word 4 + j 8 further.
                let xo = 64u * b + 32u * h + 4u * s;
                let xa = x8(xo, 8u);
                let xb = x8(xo + 16u, 8u);
                for (var r = 0u; r < RPT; r++) {
                    // Words 4s..4s + 4 of the half's low nibbles (la, lb) and high bits (hi).
                    let la = w[base[r] + 4u * h + s];
                    let lb = w[base[r] + 4u * h + 2u + s];
                    let hi = w[base[r] + 8u + 2u * h + s];
                    // Sums of the four 16-value groups of scales 8h + s + 2i, i = 0..3.
                    let part = q6_groups(la.x, lb.x, hi.x, xa[0], xa[4], xb[0], xb[4])
                        + q6_groups(la.y, lb.y, hi.y, xa[1], xa[5], xb[1], xb[5])
                        + q6_groups(la.z, lb.z, hi.z, xa[2], xa[6], xb[2], xb[6])
                        + q6_groups(la.w, lb.w, hi.w, xa[3], xa[7], xb[3], xb[7]);
                    // Signed bytes s and s + 2 of the half's two scale words.
                    let s0 = scales[r][2u * h];
                    let s1 = scales[r][2u * h + 1u];
                    let at = vec4<u32>(24u - 8u * s, 8u - 8u * s, 24u - 8u * s, 8u - 8u * s);
                    let sc = bitcast<vec4<i32>>(vec4<u32>(s0, s0, s1, s1) << at) >> vec4<u32>(24u);
                    acc[r] += d[r] * dot(part, vec4<f32>(sc));
                }
            }
        }
    }
    return acc;
}

// One word of Q4_K or Q5_K quants (qw, with Q5_K's high bits hw) of sub-blocks g (low nibbles)
// and g + 1 (high) against their inputs x0 and x1; sm holds the two sub-blocks' d times scale
// and dmin times min.
fn k45_word(qw: u32, hw: u32, g: u32, sm: vec4<f32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    let h0 = ((hw >> g) & 0x01010101u) << 4u;
    let h1 = ((hw >> (g + 1u)) & 0x01010101u) << 4u;
    let v0 = byte_values((qw & 0x0F0F0F0Fu) | h0);
    let v1 = byte_values(((qw >> 4u) & 0x0F0F0F0Fu) | h1);
    return dot(sm.x * v0 - sm.z, x0) + dot(sm.y * v1 - sm.w, x1);
}

// Q4_K (see unit_q4_k) and, with `five`, Q5_K (unit_q5_k): d|dmin, scales[12], then Q5_K's
// qh[32], then qs[128], in `size` vec4s. Sub-block g's values 32g + l are the low (g even) or
// high nibble of qs[32 (g / 2) + l], Q5_K's fifth bit bit g of qh[l].
fn sums_q45_k(first: u32, lane: u32, size: u32, five: bool) -> Sums {
    var acc: Sums;
    let qs = select(1u, 3u, five);
    for (var b = lane; b < M.cols / 256u; b += LANES) {
        // Per row, the super-block's start, d times the scales and dmin times the mins of
        // sub-blocks 0..3 and 4..7, and Q5_K's qh.
        var base: array<u32, RPT>;
        var sc: array<array<vec4<f32>, 2>, RPT>;
        var mn: array<array<vec4<f32>, 2>, RPT>;
        var qh = array<array<vec4<u32>, 2>, RPT>();
        for (var r = 0u; r < RPT; r++) {
            base[r] = super_block(thread_row(first, r), 8u * b) * size;
            let head = w[base[r]];
            let dm = unpack2x16float(head.x);
            sc[r][0] = dm.x * byte_values(head.y & 0x3F3F3F3Fu);
            mn[r][0] = dm.y * byte_values(head.z & 0x3F3F3F3Fu);
            sc[r][1] = dm.x * byte_values((head.w & 0x0F0F0F0Fu) | ((head.y >> 2u) & 0x30303030u));
            mn[r][1] = dm.y * byte_values(((head.w >> 4u) & 0x0F0F0F0Fu) | ((head.z >> 2u) & 0x30303030u));
            if (five) {
                qh[r][0] = w[base[r] + 1u];
                qh[r][1] = w[base[r] + 2u];
            }
        }
        // Sub-blocks g = 2c and g + 1: words 8c..8c + 8 of qs, against x0 and x1.
        for (var c = 0u; c < 4u; c++) {
            let x0 = x8(64u * b + 16u * c, 4u);
            let x1 = x8(64u * b + 16u * c + 8u, 4u);
            let g = 2u * c;
            for (var r = 0u; r < RPT; r++) {
                let qa = w[base[r] + qs + 2u * c];
                let qb = w[base[r] + qs + 2u * c + 1u];
                let ha = qh[r][0];
                let hb = qh[r][1];
                let sm = vec4<f32>(
                    sc[r][g / 4u][g % 4u],
                    sc[r][g / 4u][g % 4u + 1u],
                    mn[r][g / 4u][g % 4u],
                    mn[r][g / 4u][g % 4u + 1u],
                );
                acc[r] += k45_word(qa.x, ha.x, g, sm, x0[0], x1[0]);
                acc[r] += k45_word(qa.y, ha.y, g, sm, x0[1], x1[1]);
                acc[r] += k45_word(qa.z, ha.z, g, sm, x0[2], x1[2]);
                acc[r] += k45_word(qa.w, ha.w, g, sm, x0[3], x1[3]);
                acc[r] += k45_word(qb.x, hb.x, g, sm, x0[4], x1[4]);
                acc[r] += k45_word(qb.y, hb.y, g, sm, x0[5], x1[5]);
                acc[r] += k45_word(qb.z, hb.z, g, sm, x0[6], x1[6]);
                acc[r] += k45_word(qb.w, hb.w, g, sm, x0[7], x1[7]);
            }
        }
    }
    return acc;
}

fn sums_q4_k(first: u32, lane: u32) -> Sums {
    return sums_q45_k(first, lane, 9u, false);
}

fn sums_q5_k(first: u32, lane: u32) -> Sums {
    return sums_q45_k(first, lane, 11u, true);
}
