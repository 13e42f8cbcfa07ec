#!/usr/bin/env python3
"""Checks `hearth quantize` against gguf-py, the reader llama.cpp ships.

Builds a small random llama model as an F32 GGUF with gguf-py's writer (rows of 256 so that
K-quants apply, plus a tensor whose rows are not), quantizes it with `hearth quantize` to each
scheme, and checks with gguf-py that:
  - the output parses and every tensor dequantizes;
  - each tensor has the type llama.cpp's policy gives it (Q4_K_M: Q6_K for the output head and
    for attn_v / ffn_down of the layers `use_more_bits` picks, Q4_K elsewhere; fallbacks for
    rows that are not whole super-blocks; 1-D tensors stay F32);
  - Q8_0 and Q4_0 bytes equal gguf-py's own quantizer's, byte for byte;
  - every dequantized tensor is within the quantization error bound of the original;
  - metadata is carried over, with general.file_type set.

Usage: check_quantize.py PATH_TO_HEARTH
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

N_LAYER = 8
EMBD, FF, VOCAB = 256, 512, 320
# Relative RMS error bounds, about 1.3x what each type gives on Gaussian data.
BOUND = {T.F32: 0.0, T.Q8_0: 0.008, T.Q6_K: 0.025, T.Q5_0: 0.06, T.Q4_K: 0.1, T.Q4_0: 0.11}
FILE_TYPE = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15}


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {"token_embd.weight": rng.standard_normal((VOCAB, EMBD), dtype=np.float32),
           "output_norm.weight": rng.standard_normal(EMBD, dtype=np.float32),
           "output.weight": rng.standard_normal((VOCAB, EMBD), dtype=np.float32)}
    for i in range(N_LAYER):
        shapes = {"attn_norm.weight": (EMBD,), "attn_q.weight": (EMBD, EMBD),
                  "attn_k.weight": (EMBD // 2, EMBD), "attn_v.weight": (EMBD // 2, EMBD),
                  "attn_output.weight": (EMBD, EMBD), "ffn_norm.weight": (EMBD,),
                  "ffn_gate.weight": (FF, EMBD), "ffn_up.weight": (FF, EMBD),
                  # Rows of 96: not whole super-blocks, so K-quants fall back.
                  "ffn_down.weight": (EMBD, FF) if i else (EMBD, 96)}
        for name, shape in shapes.items():
            out[f"blk.{i}.{name}"] = rng.standard_normal(shape, dtype=np.float32)
    return out


def expected_type(name: str, row: int, ndim: int, scheme: str) -> T:
    if ndim < 2:
        return T.F32
    base = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k_m": T.Q4_K}[scheme]
    if name == "output.weight":
        ty = T.Q8_0 if row % 256 or scheme == "q8_0" else T.Q6_K
    elif scheme == "q4_k_m" and ("attn_v" in name or "ffn_down" in name) \
            and use_more_bits(int(name.split(".")[1]), N_LAYER):
        ty = T.Q6_K
    else:
        ty = base
    if row % 256:
        ty = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}.get(ty, ty)
    return ty


def write_source(path: Path, data: dict[str, np.ndarray]) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("quantize-check")
    w.add_context_length(128)
    w.add_embedding_length(EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FF)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    for name, array in data.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check(hearth: str, src: Path, data: dict[str, np.ndarray], scheme: str, out: Path) -> list[str]:
    subprocess.run([hearth, "quantize", str(src), str(out), "--type", scheme], check=True)
    reader = gguf.GGUFReader(str(out))
    problems = []
    ft = reader.fields["general.file_type"]
    if int(ft.parts[ft.data[0]][0]) != FILE_TYPE[scheme]:
        problems.append(f"{scheme}: general.file_type is not {FILE_TYPE[scheme]}")
    if "tokenizer.ggml.tokens" not in reader.fields:
        problems.append(f"{scheme}: metadata was not carried over")
    seen = set()
    for t in reader.tensors:
        seen.add(t.name)
        original = data[t.name]
        want = expected_type(t.name, original.shape[-1], original.ndim, scheme)
        if t.tensor_type != want:
            problems.append(f"{scheme} {t.name}: {t.tensor_type.name}, expected {want.name}")
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(original.shape)
        err = np.sqrt(np.mean((values - original) ** 2) / np.mean(original ** 2))
        if err > BOUND[want]:
            problems.append(f"{scheme} {t.name} ({want.name}): relative RMS error {err:.4f} > {BOUND[want]}")
        if want in (T.Q8_0, T.Q4_0, T.Q5_0):
            reference = gguf.quants.quantize(original, want)
            if not np.array_equal(np.asarray(t.data).view(np.uint8).ravel(), reference.view(np.uint8).ravel()):
                problems.append(f"{scheme} {t.name}: {want.name} bytes differ from gguf-py's quantizer")
    if seen != set(data):
        problems.append(f"{scheme}: tensors {sorted(set(data) ^ seen)} missing or extra")
    counts = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    print(f"{scheme}: {len(seen)} tensors, types {counts}")
    return problems


def main() -> int:
    hearth = sys.argv[1]
    data = tensors()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source.f32.gguf"
        write_source(src, data)
        problems = []
        for scheme in FILE_TYPE:
            problems += check(hearth, src, data, scheme, Path(tmp) / f"out.{scheme}.gguf")
    for p in problems:
        print("FAIL:", p)
    print(f"{3 - len({p.split()[0] for p in problems})} passed, {len({p.split()[0] for p in problems})} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
