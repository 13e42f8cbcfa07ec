//! Every shader the engine compiles, named by what varies between its variants, and the WGSL
//! fragments each is composed of. Nothing here needs a device, so every variant can be
//! validated without one (`tests/shaders.rs`).

use hearth_core::quant::GgmlType;

use crate::weights::gpu_decoder;
use crate::GpuError;

pub const COMMON: &str = include_str!("../../../../shaders/common.wgsl");
pub const QUANT: &str = include_str!("../../../../shaders/quant.wgsl");
pub const MATVEC: &str = include_str!("../../../../shaders/matvec.wgsl");
pub const SUPERBLOCK: &str = include_str!("../../../../shaders/superblock.wgsl");
pub const MATMUL: &str = include_str!("../../../../shaders/matmul.wgsl");
pub const PRODUCT_OUT: &str = include_str!("../../../../shaders/product_out.wgsl");
pub const REDUCE_WG: &str = include_str!("../../../../shaders/reduce_wg.wgsl");
pub const REDUCE_SUBGROUP: &str = include_str!("../../../../shaders/reduce_subgroup.wgsl");
pub const EMBED: &str = include_str!("../../../../shaders/embed.wgsl");
pub const RMS_NORM: &str = include_str!("../../../../shaders/rms_norm.wgsl");
pub const ROPE: &str = include_str!("../../../../shaders/rope.wgsl");
pub const ATTENTION: &str = include_str!("../../../../shaders/attention.wgsl");
pub const KV_STORE: &str = include_str!("../../../../shaders/kv_store.wgsl");
pub const ARGMAX: &str = include_str!("../../../../shaders/argmax.wgsl");
pub const TOP: &str = include_str!("../../../../shaders/top.wgsl");
pub const CONV: &str = include_str!("../../../../shaders/conv.wgsl");
pub const DELTA: &str = include_str!("../../../../shaders/delta.wgsl");
pub const DELTA_NET: &str = include_str!("../../../../shaders/delta_net.wgsl");
pub const DELTA_PREP: &str = include_str!("../../../../shaders/delta_prep.wgsl");
pub const DELTA_CHUNK: &str = include_str!("../../../../shaders/delta_chunk.wgsl");
pub const COPY: &str = include_str!("../../../../shaders/copy.wgsl");

/// Threads of a matrix-kernel workgroup; its rows are split among them (matvec.wgsl).
pub const MATRIX_THREADS: u32 = 64;

/// Tokens one matmul workgroup takes (`TILE` in matmul.wgsl).
pub const MATMUL_TILE: u32 = 8;

/// Whether `ty` has a matvec by whole 256-value super-blocks (superblock.wgsl) besides the one
/// by 32-value units.
pub fn super_block_path(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K)
}

/// Rows of one matvec workgroup, `lanes` threads per row and `rows` rows per thread (`ROWS`).
pub fn matvec_rows(lanes: u32, rows: u32) -> u32 {
    MATRIX_THREADS / lanes * rows
}

/// Rows of a sub-chunk of the chunked delta rule (`SUB` in delta.wgsl) for key heads of `dk`:
/// at most 16, and no more than fit a sub-chunk of key rows in 8 KiB of workgroup memory.
pub fn delta_sub_chunk(dk: usize) -> usize {
    (2048 / dk.max(1)).clamp(1, 16)
}

/// The kernels of a delta-net layer's recurrence (see delta.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeltaPart {
    /// Token by token (a decode step).
    Recurrent,
    /// The chunked form's state-free part, per sub-chunk.
    Prep,
    /// The chunked form's walk over sub-chunks.
    Chunk,
}

/// What a binding of a kernel's group 1 is.
#[derive(Clone, Copy)]
pub enum Slot {
    Uniform,
    Read,
    Write,
}

/// One shader variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// A decode step's matrix-vector product over blocks of `ty`, `lanes` threads per row and
    /// `rows` rows per thread, by super-blocks where `super_blocks` (for the formats of
    /// [`super_block_path`]) and otherwise by 32-value units.
    Matvec {
        ty: GgmlType,
        lanes: u32,
        rows: u32,
        super_blocks: bool,
    },
    /// A prompt chunk's matrix product by 32-value units, `lanes` and `rows` as for `Matvec`;
    /// its input rows read as vec4s where `wide_x` (their length a multiple of 4).
    Matmul {
        ty: GgmlType,
        lanes: u32,
        rows: u32,
        wide_x: bool,
    },
    Embed {
        ty: GgmlType,
    },
    RmsNorm,
    Rope,
    /// Attention over an f32 or f16 cache, `vpt` value dimensions per thread; queries and keys
    /// read as vec4s where `wide_k` (heads a multiple of 4 wide).
    Attention {
        f16_kv: bool,
        vpt: u32,
        wide_k: bool,
    },
    KvStore,
    Argmax,
    Top,
    Conv,
    DeltaNet {
        dk: u32,
        dv: u32,
        part: DeltaPart,
    },
}

/// What of the device a source depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The subgroup size the matrix kernels reduce with, if subgroups are used.
    pub subgroup: Option<u32>,
    /// Browsers require `enable subgroups;`; naga (native) enables subgroup operations with the
    /// device feature and rejects the directive.
    pub subgroup_directive: bool,
}

/// The WGSL selector that makes `unit()` decode blocks of `ty`.
fn unit_selector(ty: GgmlType) -> Result<String, GpuError> {
    let (_, name) = gpu_decoder(ty)?;
    Ok(format!(
        "fn unit(row: u32, u: u32) -> Unit {{ return unit_{name}(row, u); }}\n"
    ))
}

/// The WGSL selector that makes matvec.wgsl's `lane_sums` go by 32-value units or by
/// super-blocks (`sums_{name}` in superblock.wgsl).
fn lane_sums_selector(ty: GgmlType, super_blocks: bool) -> Result<String, GpuError> {
    let sums = if super_blocks {
        format!("sums_{}", gpu_decoder(ty)?.1)
    } else {
        "unit_sums".into()
    };
    Ok(format!(
        "fn lane_sums(first: u32, lane: u32) -> Sums {{ return {sums}(first, lane); }}\n"
    ))
}

/// Whether a matrix kernel of `lanes` threads per row over vec4 input rows (`wide_x`) reads its
/// input once per subgroup and broadcasts it (`x8` in matvec.wgsl): with one thread per row and
/// subgroups of at least 8.
fn shared_x(lanes: u32, wide_x: bool, f: &Features) -> bool {
    wide_x && lanes == 1 && f.subgroup.is_some_and(|s| s >= 8)
}

/// A matrix kernel's input binding, its readers and its entry point, which runs `call` (matvec or
/// matmul of the thread `li`, the workgroup `group` and, for matmul, the token tile `wg.z`).
/// The input is vec4s where `wide_x` (always for matvec), read by `x8` (matvec.wgsl), by
/// subgroup broadcasts where [`shared_x`], else by a load per vec4; `x_unit(i)` is values
/// i..i + 32 (i a multiple of 32), four scalar loads a vec4 where not `wide_x`. `row_lane` is a
/// constant 0 for one thread per row, so that WGSL's uniformity analysis sees the loops over a
/// row as uniform.
fn matrix_input(call: &str, lanes: u32, wide_x: bool, f: &Features) -> String {
    let lane = if lanes == 1 { "0u" } else { "li % LANES" };
    let elem = if wide_x { "vec4<f32>" } else { "f32" };
    let mut s = format!(
        "const TILE: u32 = {MATMUL_TILE}u;\n\
         @group(1) @binding(2) var<storage, read> x: array<{elem}>;\n\
         fn row_lane(li: u32) -> u32 {{ return {lane}; }}\n"
    );
    // The entry point's extra parameter and first statement.
    let (mut param, mut set) = ("", "");
    if shared_x(lanes, wide_x, f) {
        param = ", @builtin(subgroup_invocation_id) sid: u32";
        set = "x_lane = sid; ";
        let spread: Vec<String> = (0..8)
            .map(|k| format!("subgroupBroadcast(v, {k}u)"))
            .collect();
        s += &format!(
            "var<private> x_lane: u32;\n\
             fn x8(i: u32, step: u32) -> array<vec4<f32>, 8> {{\n\
             let k = x_lane % 8u;\n\
             let v = x[i + k % 4u + step * (k / 4u)];\n\
             return array<vec4<f32>, 8>({});\n}}\n",
            spread.join(", ")
        );
    } else if wide_x {
        s += "fn x8(i: u32, step: u32) -> array<vec4<f32>, 8> {\n\
              var v: array<vec4<f32>, 8>;\n\
              for (var k = 0u; k < 8u; k++) { v[k] = x[i + k % 4u + step * (k / 4u)]; }\n\
              return v;\n}\n";
    }
    s += if wide_x {
        "fn x_unit(i: u32) -> array<vec4<f32>, 8> { return x8(i / 4u, 4u); }\n"
    } else {
        "fn x_unit(i: u32) -> array<vec4<f32>, 8> {\n\
         var v: array<vec4<f32>, 8>;\n\
         for (var k = 0u; k < 8u; k++) { v[k] = vec4<f32>(x[i + 4u * k], x[i + 4u * k + 1u], x[i + 4u * k + 2u], x[i + 4u * k + 3u]); }\n\
         return v;\n}\n"
    };
    s += &format!(
        "@compute @workgroup_size(64)\n\
         fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>, \
         @builtin(num_workgroups) nwg: vec3<u32>{param}) {{ {set}let group = wg.x + wg.y * nwg.x; {call}; }}\n"
    );
    s
}

/// attention.wgsl's query and key bindings and `score`: by vec4s where `wide_k`, else by
/// scalars.
fn attention_keys(wide_k: bool) -> String {
    let (q, k, steps, term) = if wide_k {
        (
            "vec4<f32>",
            "vec4<KV>",
            "A.head_dim / 4u",
            "dot(q[qb / 4u + d], vec4<f32>(kc[kr / 4u + d]))",
        )
    } else {
        ("f32", "KV", "A.head_dim", "q[qb + d] * f32(kc[kr + d])")
    };
    format!(
        "@group(1) @binding(1) var<storage, read> q: array<{q}>;\n\
         @group(1) @binding(2) var<storage, read> kc: array<{k}>;\n\
         fn score(qb: u32, kr: u32) -> f32 {{\n\
         var s = 0.0;\n\
         for (var d = 0u; d < {steps}; d++) {{ s += {term}; }}\n\
         return s;\n}}\n"
    )
}

impl Shader {
    pub fn label(self) -> String {
        match self {
            Shader::Matvec {
                ty,
                lanes,
                rows,
                super_blocks,
            } => format!(
                "matvec {ty} x{lanes} r{rows}{}",
                if super_blocks { " by super-blocks" } else { "" }
            ),
            Shader::Matmul {
                ty,
                lanes,
                rows,
                wide_x,
            } => format!(
                "matmul {ty} x{lanes} r{rows}{}",
                if wide_x { " by vec4" } else { "" }
            ),
            Shader::Embed { ty } => format!("embed {ty}"),
            Shader::Attention {
                f16_kv,
                vpt,
                wide_k,
            } => format!(
                "attention {} x{vpt}{}",
                if f16_kv { "f16" } else { "f32" },
                if wide_k { " by vec4" } else { "" }
            ),
            Shader::DeltaNet { dk, dv, part } => format!("delta_net {part:?} {dk}x{dv}"),
            other => format!("{other:?}"),
        }
    }

    /// The kinds of its group-1 bindings, in binding order.
    pub fn slots(self) -> &'static [Slot] {
        use Slot::*;
        match self {
            Shader::Matvec { .. } | Shader::Matmul { .. } => &[Read, Uniform, Read, Write, Read],
            Shader::Embed { .. } => &[Read, Uniform, Write],
            Shader::RmsNorm => &[Uniform, Read, Read, Write],
            Shader::Rope => &[Uniform, Write, Read, Read],
            Shader::Attention { .. } => &[Uniform, Read, Read, Read, Write],
            Shader::KvStore => &[Uniform, Read, Read, Write, Write],
            Shader::Argmax => &[Uniform, Read, Write, Read],
            Shader::Top => &[Uniform, Read, Read, Write, Read],
            Shader::Conv => &[Uniform, Write, Read, Write],
            Shader::DeltaNet { .. } => {
                &[Uniform, Read, Read, Read, Read, Read, Write, Write, Write]
            }
        }
    }

    /// The WGSL source: the variant's constants, then its fragments in dependency order.
    pub fn source(self, f: &Features) -> Result<String, GpuError> {
        let mut parts: Vec<String> = Vec::new();
        match self {
            Shader::Matvec {
                ty, lanes, rows, ..
            }
            | Shader::Matmul {
                ty, lanes, rows, ..
            } => {
                if f.subgroup.is_some() && f.subgroup_directive {
                    parts.push("enable subgroups;\n".into());
                }
                parts.push(format!(
                    "const LANES: u32 = {lanes}u;\nconst RPT: u32 = {rows}u;\nconst ROWS: u32 = {}u;\n",
                    matvec_rows(lanes, rows)
                ));
                let (call, wide_x) = match self {
                    Shader::Matmul { wide_x, .. } => ("matmul(li, group, wg.z)", wide_x),
                    _ => ("matvec(li, group)", true),
                };
                parts.push(matrix_input(call, lanes, wide_x, f));
                let matvec = match self {
                    Shader::Matvec { super_blocks, .. } => {
                        Some(super_blocks && super_block_path(ty))
                    }
                    _ => None,
                };
                parts.extend([COMMON, QUANT].map(String::from));
                parts.push(unit_selector(ty)?);
                parts.push(PRODUCT_OUT.into());
                match matvec {
                    Some(super_blocks) => {
                        parts.push(MATVEC.into());
                        if super_blocks {
                            parts.push(SUPERBLOCK.into());
                        }
                        parts.push(lane_sums_selector(ty, super_blocks)?);
                    }
                    None => parts.push(MATMUL.into()),
                }
                parts.push(match f.subgroup {
                    Some(sg) => format!("const SG: u32 = {}u;\n{REDUCE_SUBGROUP}", sg.min(lanes)),
                    None => REDUCE_WG.into(),
                });
            }
            Shader::Embed { ty } => {
                parts.extend([COMMON, QUANT].map(String::from));
                parts.push(unit_selector(ty)?);
                parts.push(EMBED.into());
            }
            Shader::Attention {
                f16_kv,
                vpt,
                wide_k,
            } => {
                parts.push(if f16_kv {
                    "enable f16;\nalias KV = f16;\n".into()
                } else {
                    "alias KV = f32;\n".into()
                });
                parts.push(format!("const VPT: u32 = {vpt}u;\n"));
                parts.push(attention_keys(wide_k));
                parts.extend([COMMON, ATTENTION].map(String::from));
            }
            Shader::KvStore => parts.extend(["enable f16;\n", COMMON, KV_STORE].map(String::from)),
            Shader::DeltaNet { dk, dv, part } => {
                parts.push(format!(
                    "const DK: u32 = {dk}u;\nconst DV: u32 = {dv}u;\nconst SUB: u32 = {}u;\n",
                    delta_sub_chunk(dk as usize)
                ));
                let kernel = match part {
                    DeltaPart::Recurrent => DELTA_NET,
                    DeltaPart::Prep => DELTA_PREP,
                    DeltaPart::Chunk => DELTA_CHUNK,
                };
                parts.extend([COMMON, DELTA, kernel].map(String::from));
            }
            Shader::RmsNorm => parts.extend([COMMON, RMS_NORM].map(String::from)),
            Shader::Rope => parts.extend([COMMON, ROPE].map(String::from)),
            Shader::Conv => parts.extend([COMMON, CONV].map(String::from)),
            Shader::Argmax => parts.push(ARGMAX.into()),
            Shader::Top => parts.push(TOP.into()),
        }
        Ok(parts.concat())
    }
}
