//! Every shader variant the engine can compose, validated by naga without a device, and every
//! uniform block's Rust mirror checked against its WGSL struct, field by field. A WGSL edit that
//! breaks a variant no test adapter runs (another subgroup size, the f16 cache, a block format
//! or a head width a fixture lacks) fails here.

use std::collections::HashSet;

use hearth_core::quant::GgmlType;
use hearth_gpu::kernels::{self, DeltaPart, Features, Shader};
use hearth_gpu::weights::gpu_format;
use wgpu::naga;

fn module(label: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(src)));
    module
}

/// Every variant: matrix kernels per GPU block format and lane count, embeddings per format,
/// attention per cache type and value width, delta nets of several head shapes.
fn variants() -> Vec<Shader> {
    let types: HashSet<GgmlType> = GgmlType::DECODED
        .iter()
        .map(|&t| gpu_format(t).unwrap())
        .collect();
    let mut out = vec![
        Shader::RmsNorm,
        Shader::Rope,
        Shader::KvStore,
        Shader::Argmax,
        Shader::Top,
        Shader::Conv,
    ];
    for ty in types {
        out.push(Shader::Embed { ty });
        for lanes in [1, 2, 4, 8, 16] {
            for rows in [1, 2] {
                for super_blocks in [false, true] {
                    out.push(Shader::Matvec {
                        ty,
                        lanes,
                        rows,
                        super_blocks,
                    });
                }
            }
            for (rows, wide_x) in [(1, false), (4, true)] {
                out.push(Shader::Matmul {
                    ty,
                    lanes,
                    rows,
                    wide_x,
                });
            }
        }
    }
    for f16_kv in [false, true] {
        for vpt in 1..=5 {
            for wide_k in [false, true] {
                out.push(Shader::Attention {
                    f16_kv,
                    vpt,
                    wide_k,
                });
            }
        }
    }
    for (dk, dv) in [
        (16, 16),
        (24, 20),
        (128, 128),
        (64, 256),
        (256, 128),
        (3000, 8),
    ] {
        for part in [DeltaPart::Recurrent, DeltaPart::Prep, DeltaPart::Chunk] {
            out.push(Shader::DeltaNet { dk, dv, part });
        }
    }
    out
}

#[test]
fn every_variant_validates() {
    let mut checked = 0;
    for subgroup in [
        None,
        Some(4),
        Some(8),
        Some(16),
        Some(32),
        Some(64),
        Some(128),
    ] {
        let features = Features {
            subgroup,
            subgroup_directive: false,
        };
        for shader in variants() {
            let label = format!("{} (subgroups {subgroup:?})", shader.label());
            let src = shader.source(&features).unwrap();
            let m = module(&label, &src);
            // Group 1 binds what the pipeline layout says, in order.
            let mut bindings: Vec<u32> = m
                .global_variables
                .iter()
                .filter_map(|(_, v)| v.binding.as_ref())
                .filter(|b| b.group == 1)
                .map(|b| b.binding)
                .collect();
            bindings.sort();
            let want: Vec<u32> = (0..shader.slots().len() as u32).collect();
            assert_eq!(bindings, want, "{label}: group 1 bindings");
            checked += 1;
        }
    }
    module("copy", kernels::COPY);
    eprintln!("{checked} shader variants validated");
}

/// (WGSL struct, Rust size, Rust fields with their offsets).
type Mirror = (&'static str, usize, Vec<(&'static str, usize)>);

macro_rules! mirror {
    ($wgsl:literal, $t:ty, [$($f:ident),*]) => {
        (
            $wgsl,
            std::mem::size_of::<$t>(),
            vec![$((stringify!($f), std::mem::offset_of!($t, $f))),*],
        )
    };
}

#[test]
fn uniform_blocks_match_their_rust_mirrors() {
    use kernels::*;
    let mirrors: Vec<Mirror> = vec![
        mirror!("Step", Step, [pos, token, row, count]),
        mirror!(
            "Mat",
            Mat,
            [
                rows, cols, row_words, scale_base, row_offset, mode, has_bias, pos_stride,
                y_stride, pos_ring, out_scale
            ]
        ),
        mirror!("Norm", NormParams, [n, eps, step_row, add, centred]),
        mirror!(
            "Rope",
            RopeParams,
            [head_dim, rope_dim, neox, has_norm, eps, pos_stride, row_stride, pos_ring]
        ),
        mirror!(
            "Attn",
            AttnParams,
            [n_head, group, head_dim, head_dim_v, k_dim, v_dim, window, scale, ring]
        ),
        mirror!("Store", KvStoreParams, [k_dim, v_dim, ring]),
        mirror!("TopParams", TopParams, [n, from_logits, neg_inf, masked]),
        mirror!("ArgmaxParams", ArgmaxParams, [n, masked]),
        mirror!("Conv", ConvParams, [channels, kernel, silu]),
        mirror!(
            "Delta",
            DeltaParams,
            [n_k, n_v, conv_dim, key_dim, value_dim, eps, q_scale]
        ),
    ];
    let features = Features::default();
    let mut seen = HashSet::new();
    for shader in variants() {
        let src = shader.source(&features).unwrap();
        let m = module(&shader.label(), &src);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(m.to_ctx()).unwrap();
        for (handle, ty) in m.types.iter() {
            let (Some(name), naga::TypeInner::Struct { members, span }) = (&ty.name, &ty.inner)
            else {
                continue;
            };
            let Some((_, size, fields)) = mirrors.iter().find(|(n, ..)| n == name) else {
                continue;
            };
            assert_eq!(*span as usize, *size, "{name}: size");
            assert_eq!(layouter[handle].size as usize, *size, "{name}: layout size");
            for (field, offset) in fields {
                let member = members
                    .iter()
                    .find(|mb| mb.name.as_deref() == Some(field))
                    .unwrap_or_else(|| panic!("{name}.{field} is not in the WGSL struct"));
                assert_eq!(member.offset as usize, *offset, "{name}.{field}: offset");
            }
            seen.insert(name.clone());
        }
    }
    for (name, ..) in &mirrors {
        assert!(seen.contains(*name), "no shader declares {name}");
    }
}
