// Weight decoding shared by the matrix kernels: one "unit" is 32 consecutive values of a row,
// returned as eight vec4s so callers can dot them with vec4 loads of the input.
//
// Layout, repacked at load time (hearth-gpu's weights.rs): every tensor (or row range of a split
// tensor) is one array of words, bound as vec4s. Rows are whole blocks; a block's body words
// come first, in row-major block order, and formats whose scales move (their row in
// hearth-core's quant/formats.rs) keep them in a separate region at word `M.scale_base`: one u32
// per block, an f16 `d` in the low half (Q4_1 and Q5_1: `d` low, `m` high). Other blocks stay as
// in GGUF. F32 rows are plain; F16 rows are padded to an even count.
//
// Arithmetic follows hearth-core's dequantizers (which follow ggml) operation for operation.

struct Mat {
    rows: u32,        // rows held by this buffer
    cols: u32,
    row_words: u32,   // body words per row
    scale_base: u32,  // first word of the scale region
    row_offset: u32,  // index of this buffer's first row in the whole tensor
    mode: u32,        // output: 0 store, 1 add, 2 multiply silu(output), 3 gate by sigmoid,
                      // 4 multiply, 5 gelu, 6 multiply gelu(output)
    has_bias: u32,
    pos_stride: u32,  // output starts at step.pos * pos_stride (writes into a KV cache)
    y_stride: u32,    // matmul: values per output row (the whole tensor's rows)
    pos_ring: u32,    // a KV cache of this many slots holds position p at p % pos_ring (0: p)
    out_scale: f32,   // embed.wgsl: the factor on every value of the row
    _pad0: u32,
}

// The KV cache slot of position `p`.
fn cache_slot(p: u32) -> u32 {
    return select(p, p % M.pos_ring, M.pos_ring != 0u);
}

struct Unit {
    v: array<vec4<f32>, 8>,
}

// The words are read four at a time where a block's words are aligned to four (on a CPU device
// every read loops over the SIMD lanes, so one vec4 read costs much less than four word reads);
// `word_at` reads one word.
@group(1) @binding(0) var<storage, read> w: array<vec4<u32>>;

fn word_at(i: u32) -> u32 {
    return w[i / 4u][i % 4u];
}

// Words i..i + 8, i a multiple of 4: word i + k is [k / 4][k % 4].
fn words8(i: u32) -> array<vec4<u32>, 2> {
    return array<vec4<u32>, 2>(w[i / 4u], w[i / 4u + 1u]);
}
@group(1) @binding(1) var<uniform> M: Mat;

fn f16_lo(word: u32) -> f32 {
    return unpack2x16float(word).x;
}

// Bits `shift..shift + width` of each byte of `word`.
fn bytes_bits(word: u32, shift: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(word) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(mask);
}

// Byte `i` of the words starting at `base`.
fn byte_at(base: u32, i: u32) -> u32 {
    return (word_at(base + i / 4u) >> (8u * (i % 4u))) & 255u;
}

fn units_per_row() -> u32 {
    return (M.cols + 31u) / 32u;
}

fn unit_f32(row: u32, u: u32) -> Unit {
    var r: Unit;
    let base = row * M.cols;
    for (var k = 0u; k < 8u; k++) {
        let c = u * 32u + 4u * k;
        var v = vec4<f32>(0.0);
        for (var i = 0u; i < 4u; i++) {
            if (c + i < M.cols) {
                v[i] = bitcast<f32>(word_at(base + c + i));
            }
        }
        r.v[k] = v;
    }
    return r;
}

fn unit_f16(row: u32, u: u32) -> Unit {
    var r: Unit;
    let base = row * M.row_words;
    if ((M.row_words % 4u) == 0u && u * 16u + 16u <= M.row_words) {
        // A whole unit of aligned words: four vec4 reads.
        for (var i = 0u; i < 4u; i++) {
            let q = w[(base + u * 16u) / 4u + i];
            r.v[2u * i] = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
            r.v[2u * i + 1u] = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
        }
        return r;
    }
    for (var k = 0u; k < 8u; k++) {
        let c = u * 16u + 2u * k;
        var a = vec2<f32>(0.0);
        var b = vec2<f32>(0.0);
        if (c < M.row_words) {
            a = unpack2x16float(word_at(base + c));
        }
        if (c + 1u < M.row_words) {
            b = unpack2x16float(word_at(base + c + 1u));
        }
        r.v[k] = vec4<f32>(a, b);
    }
    return r;
}

// Block of a 32-value format that holds unit u of a row; its body starts at word blk * words.
fn block32(row: u32, u: u32) -> u32 {
    return row * (M.cols / 32u) + u;
}

// The fifth bits of values e..e+4 from the 32-bit mask qh.
fn high4(qh: u32, e: u32) -> vec4<u32> {
    return ((vec4<u32>(qh) >> vec4<u32>(e, e + 1u, e + 2u, e + 3u)) & vec4<u32>(1u)) << vec4<u32>(4u);
}

// The 32 quants of a Q4 or Q5 block from 16 bytes of nibbles in `words`: value j and j + 16
// share byte j (low nibble, then high), and Q5's fifth bits come from `qh` (0 for Q4).
fn nibbles(words: vec4<u32>, qh: u32) -> Unit {
    var q: Unit;
    for (var k = 0u; k < 4u; k++) {
        let b = words[k];
        q.v[k] = vec4<f32>(bytes_bits(b, 0u, 15u) | high4(qh, 4u * k));
        q.v[k + 4u] = vec4<f32>(bytes_bits(b, 4u, 15u) | high4(qh, 16u + 4u * k));
    }
    return q;
}

// The `_0` formats: (q - zero) * d.
fn centred(q: Unit, zero: f32, d: f32) -> Unit {
    var r: Unit;
    for (var k = 0u; k < 8u; k++) {
        r.v[k] = (q.v[k] - zero) * d;
    }
    return r;
}

// The `_1` formats: q * d + m, from their scale word d|m.
fn offset(q: Unit, dm: vec2<f32>) -> Unit {
    var r: Unit;
    for (var k = 0u; k < 8u; k++) {
        r.v[k] = q.v[k] * dm.x + dm.y;
    }
    return r;
}

fn unit_q4_0(row: u32, u: u32) -> Unit {
    let blk = block32(row, u);
    return centred(nibbles(w[blk], 0u), 8.0, f16_lo(word_at(M.scale_base + blk)));
}

fn unit_q4_1(row: u32, u: u32) -> Unit {
    let blk = block32(row, u);
    return offset(nibbles(w[blk], 0u), unpack2x16float(word_at(M.scale_base + blk)));
}

// Q5_0 and Q5_1 bodies: qh, then 16 bytes of nibbles (not aligned to a vec4).
fn q5_nibbles(blk: u32) -> vec4<u32> {
    let at = blk * 5u + 1u;
    return vec4<u32>(word_at(at), word_at(at + 1u), word_at(at + 2u), word_at(at + 3u));
}

fn unit_q5_0(row: u32, u: u32) -> Unit {
    let blk = block32(row, u);
    return centred(nibbles(q5_nibbles(blk), word_at(blk * 5u)), 16.0, f16_lo(word_at(M.scale_base + blk)));
}

fn unit_q5_1(row: u32, u: u32) -> Unit {
    let blk = block32(row, u);
    return offset(nibbles(q5_nibbles(blk), word_at(blk * 5u)), unpack2x16float(word_at(M.scale_base + blk)));
}

fn unit_q8_0(row: u32, u: u32) -> Unit {
    var r: Unit;
    let blk = block32(row, u);
    let d = f16_lo(word_at(M.scale_base + blk));
    let body = words8(blk * 8u);
    for (var k = 0u; k < 8u; k++) {
        let q = bitcast<i32>(body[k / 4u][k % 4u]);
        let s = vec4<i32>(q << 24u, q << 16u, q << 8u, q) >> vec4<u32>(24u);
        r.v[k] = vec4<f32>(s) * d;
    }
    return r;
}

// K-quants: unit u of a row is sub-block u % 8 of super-block u / 8.
fn super_block(row: u32, u: u32) -> u32 {
    return row * (M.cols / 256u) + u / 8u;
}

// Q2_K (21 words): scales[16], qs[64], d|dmin.
fn unit_q2_k(row: u32, u: u32) -> Unit {
    var r: Unit;
    let base = super_block(row, u) * 21u;
    let g = u % 8u;
    let dm = unpack2x16float(word_at(base + 20u));
    let shift = 2u * (g % 4u);
    for (var half = 0u; half < 2u; half++) {
        let sc = byte_at(base, 2u * g + half);
        let dl = dm.x * f32(sc & 15u);
        let ml = dm.y * f32(sc >> 4u);
        for (var k = 0u; k < 4u; k++) {
            let q = word_at(base + 4u + 8u * (g / 4u) + 4u * half + k);
            r.v[4u * half + k] = dl * vec4<f32>(bytes_bits(q, shift, 3u)) - ml;
        }
    }
    return r;
}

fn scale_q3_k(base: u32, j: u32) -> f32 {
    var low: u32;
    if (j < 8u) {
        low = byte_at(base, j) & 15u;
    } else {
        low = byte_at(base, j - 8u) >> 4u;
    }
    let high = (byte_at(base, 8u + j % 4u) >> (2u * (j / 4u))) & 3u;
    return f32(i32(low | (high << 4u)) - 32);
}

// Q3_K (27 words): hmask[32], qs[64], scales[12]; d in the scale region.
fn unit_q3_k(row: u32, u: u32) -> Unit {
    var r: Unit;
    let blk = super_block(row, u);
    let base = blk * 27u;
    let g = u % 8u;
    let d = f16_lo(word_at(M.scale_base + blk));
    let shift = 2u * (g % 4u);
    for (var half = 0u; half < 2u; half++) {
        let dl = d * scale_q3_k(base + 24u, 2u * g + half);
        for (var k = 0u; k < 4u; k++) {
            let q = vec4<i32>(bytes_bits(word_at(base + 8u + 8u * (g / 4u) + 4u * half + k), shift, 3u));
            let h = vec4<i32>(bytes_bits(word_at(base + 4u * half + k), g, 1u));
            r.v[4u * half + k] = dl * vec4<f32>(q - 4 + 4 * h);
        }
    }
    return r;
}

// Byte i of the 12 scale bytes in words 1..4 of a Q4_K or Q5_K super-block's first vec4.
fn scale_byte_k4(head: vec4<u32>, i: u32) -> u32 {
    return (head[1u + i / 4u] >> (8u * (i % 4u))) & 255u;
}

// Sub-block j's scale and min in a Q4_K or Q5_K super-block starting at word `base`: d and dmin
// (its first word) times the 6-bit scale and min packed in the 12 bytes after them.
fn scale_min_k4(base: u32, j: u32) -> vec2<f32> {
    let head = w[base / 4u];
    var sm: vec2<u32>;
    if (j < 4u) {
        sm = vec2<u32>(scale_byte_k4(head, j) & 63u, scale_byte_k4(head, j + 4u) & 63u);
    } else {
        sm = vec2<u32>(
            (scale_byte_k4(head, j + 4u) & 15u) | ((scale_byte_k4(head, j - 4u) >> 6u) << 4u),
            (scale_byte_k4(head, j + 4u) >> 4u) | ((scale_byte_k4(head, j) >> 6u) << 4u),
        );
    }
    return unpack2x16float(head.x) * vec2<f32>(sm);
}

// Q4_K (36 words): d|dmin, scales[12], qs[128].
fn unit_q4_k(row: u32, u: u32) -> Unit {
    var r: Unit;
    let base = super_block(row, u) * 36u;
    let g = u % 8u;
    let sm = scale_min_k4(base, g);
    let shift = 4u * (g % 2u);
    let qs = words8(base + 4u + 8u * (g / 2u));
    for (var k = 0u; k < 8u; k++) {
        let q = qs[k / 4u][k % 4u];
        r.v[k] = sm.x * vec4<f32>(bytes_bits(q, shift, 15u)) - sm.y;
    }
    return r;
}

// Q5_K (44 words): d|dmin, scales[12], qh[32], qs[128].
fn unit_q5_k(row: u32, u: u32) -> Unit {
    var r: Unit;
    let base = super_block(row, u) * 44u;
    let g = u % 8u;
    let sm = scale_min_k4(base, g);
    let shift = 4u * (g % 2u);
    let qs = words8(base + 12u + 8u * (g / 2u));
    let qh = words8(base + 4u);
    for (var k = 0u; k < 8u; k++) {
        let q = bytes_bits(qs[k / 4u][k % 4u], shift, 15u);
        let h = bytes_bits(qh[k / 4u][k % 4u], g, 1u) << vec4<u32>(4u);
        r.v[k] = sm.x * vec4<f32>(q | h) - sm.y;
    }
    return r;
}

// Q6_K (52 words): ql[128], qh[64], scales[16] (i8); d in the scale region.
fn unit_q6_k(row: u32, u: u32) -> Unit {
    var r: Unit;
    let blk = super_block(row, u);
    let base = blk * 52u;
    let g = u % 8u;
    let h = g / 4u;
    let k4 = g % 4u;
    let d = f16_lo(word_at(M.scale_base + blk));
    let ql = words8(base + 16u * h + 8u * (k4 % 2u));
    let qh = words8(base + 32u + 8u * h);
    for (var half = 0u; half < 2u; half++) {
        let sc = i32(byte_at(base + 48u, 8u * h + 2u * k4 + half) << 24u) >> 24u;
        let ds = d * f32(sc);
        for (var k = 0u; k < 4u; k++) {
            let l = 4u * half + k;
            let low = bytes_bits(ql[half][k], 4u * (k4 / 2u), 15u);
            let high = bytes_bits(qh[half][k], 2u * k4, 3u);
            r.v[l] = ds * vec4<f32>(vec4<i32>(low | (high << vec4<u32>(4u))) - 32);
        }
    }
    return r;
}
