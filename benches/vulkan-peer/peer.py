#!/usr/bin/env python3
"""Hearth against llama.cpp's Vulkan backend, on the same GGUF files and the same Vulkan device.

Builds llama.cpp's `llama-bench` with Vulkan from the llama-cpp-python sdist on PyPI (which
vendors llama.cpp), generates the models, then runs `llama-bench` and `hearth bench` in
alternating rounds and prints each round and the mean ratios per model and phase.
Everything it makes lives under target/vulkan-peer/ and is reused by later runs.
See README.md next to this file. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = ROOT / "target" / "vulkan-peer"

# The pinned sdist; its vendor/llama.cpp is the peer.
SDIST = ("llama-cpp-python", "0.3.36")
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
# Where the tokenizer fixtures' script keeps the same sdist, looked at before downloading.
SDIST_ELSEWHERE = ROOT / "tests" / "fixtures" / "work" / "tokenizers"

# Debian bookworm packages the build needs, and a command each provides (None: a header).
APT = {
    "cmake": "cmake",
    "g++": "g++",
    "libvulkan-dev": None,
    "glslc": "glslc",
    "glslang-tools": "glslangValidator",
    "spirv-headers": None,
}

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_VULKAN=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    # The CPU backend only runs what is not offloaded (the embedding lookup). Built for a
    # portable AVX2 level rather than -march=native, so no AMX code is emitted on CPUs that
    # have it (and the binary stays valid if the cache moves to another machine).
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
]

# Bookworm's Vulkan headers (1.3.239) predate VK_EXT_layer_settings (1.3.272), which
# ggml-vulkan uses only to turn on the validation layer's best-practice checks.
LAYER_SETTINGS_OLD = """    VkBool32 enable_best_practice = layer_settings;
    std::vector<vk::LayerSettingEXT> settings = {
        {
            "VK_LAYER_KHRONOS_validation",
            "validate_best_practices",
            vk::LayerSettingTypeEXT::eBool32,
            1,
            &enable_best_practice
        },
    };
    vk::LayerSettingsCreateInfoEXT layer_setting_info(settings);
    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);
"""
LAYER_SETTINGS_NEW = (
    "#if defined(VK_EXT_layer_settings)\n"
    + LAYER_SETTINGS_OLD
    + "#else\n"
    "    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n"
    "#endif\n"
)
PATCHES = [("ggml/src/ggml-vulkan/ggml-vulkan.cpp", LAYER_SETTINGS_OLD, LAYER_SETTINGS_NEW)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    log("+ " + " ".join(map(str, cmd)))
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------------------
# Tools and the llama-bench build


def check_packages() -> None:
    """Stops with the apt-get line when a build dependency is missing (nothing is installed)."""
    missing = []
    for package, command in APT.items():
        if command is not None:
            ok = shutil.which(command) is not None
        else:
            ok = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True).stdout.endswith("installed")
        if not ok:
            missing.append(package)
    if missing:
        sys.exit("missing build dependencies; install them with\n"
                 f"    sudo apt-get install -y {' '.join(missing)}\n"
                 "(also mesa-vulkan-drivers for lavapipe, the CPU Vulkan driver)")


def sdist_path() -> Path:
    """The pinned sdist: cached under WORK, else copied from the tokenizer fixtures' work
    directory, else downloaded from PyPI through its simple JSON API (as pip reads it);
    checked against the pinned sha256."""
    package, version = SDIST
    name = f"{package.replace('-', '_')}-{version}.tar.gz"
    cached = WORK / name
    if cached.is_file():
        return cached
    WORK.mkdir(parents=True, exist_ok=True)
    elsewhere = SDIST_ELSEWHERE / name
    tmp = cached.with_suffix(".part")
    if elsewhere.is_file():
        shutil.copyfile(elsewhere, tmp)
    else:
        index = urllib.request.Request(f"https://pypi.org/simple/{package}/",
                                       headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(index) as r:
            files = json.load(r)["files"]
        url = next(f["url"] for f in files if f["filename"] == name)
        log(f"downloading {url}")
        with urllib.request.urlopen(url) as r, open(tmp, "wb") as out:
            shutil.copyfileobj(r, out)
    if hashlib.sha256(tmp.read_bytes()).hexdigest() != SDIST_SHA256:
        tmp.unlink()
        sys.exit(f"{name}: its sha256 is not the pinned one")
    tmp.rename(cached)
    return cached


def llama_source() -> Path:
    """vendor/llama.cpp unpacked from the sdist, with the patches applied."""
    package, version = SDIST
    top = WORK / f"{package.replace('-', '_')}-{version}"
    src = top / "vendor" / "llama.cpp"
    stamp = src / ".hearth-patched"
    if stamp.is_file():
        return src
    if top.exists():
        shutil.rmtree(top)
    prefix = f"{top.name}/vendor/llama.cpp/"
    with tarfile.open(sdist_path()) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        # The "data" filter (refusing links out of the tree) where this Python has it.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(WORK, members=members, **safe)
    for rel, old, new in PATCHES:
        path = src / rel
        text = path.read_text(encoding="utf-8")
        if text.count(old) != 1:
            sys.exit(f"{rel}: the code to patch is not there once; the patch needs updating")
        path.write_text(text.replace(old, new), encoding="utf-8")
    stamp.write_text("patched\n")
    return src


def build_llama_bench(jobs: int) -> Path:
    """Builds (once) and returns llama-bench. The build directory is kept, so a second run
    only checks it is up to date."""
    src = llama_source()
    build = WORK / "llama-build"
    binary = build / "bin" / "llama-bench"
    flags_file = build / ".hearth-flags"
    flags = "\n".join(CMAKE_FLAGS)
    if binary.is_file() and flags_file.is_file() and flags_file.read_text() == flags:
        return binary
    check_packages()
    build.mkdir(parents=True, exist_ok=True)
    nice = ["nice", "-n", "19"]
    started = time.monotonic()
    run(nice + ["cmake", "-S", src, "-B", build] + CMAKE_FLAGS)
    run(nice + ["cmake", "--build", build, "--target", "llama-bench", "-j", str(jobs)])
    flags_file.write_text(flags)
    log(f"built {binary} in {(time.monotonic() - started) / 60:.1f} min")
    return binary


# ---------------------------------------------------------------------------------------------
# Hearth and the models


def cargo(args: list) -> None:
    env = dict(os.environ)
    env.setdefault("CARGO_BUILD_JOBS", "1")
    run(["nice", "-n", "19", "cargo"] + args, cwd=ROOT, env=env)


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build_hearth() -> Path:
    cargo(["build", "--release", "-p", "hearth-cli"])
    return target_dir() / "release" / "hearth"


# Model names are SHAPE.TYPE: a shape of crates/hearth-fixtures' generated models, a type
# `hearth quantize` writes (q4_k_m is how the generator writes them).
TYPES = ["q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "f16"]
DEFAULT_MODELS = [f"qwen3-100m.{t}" for t in TYPES] + ["llama3.2-1b.q4_k_m"]


def model_path(name: str, hearth: Path) -> Path:
    """The model's file under WORK/models, generated (and quantized) if missing."""
    shape, _, ty = name.rpartition(".")
    if not shape or ty not in TYPES:
        sys.exit(f"{name}: a model is SHAPE.TYPE, TYPE one of {', '.join(TYPES)}")
    models = WORK / "models"
    models.mkdir(parents=True, exist_ok=True)
    out = models / f"{name}.gguf"
    if out.is_file():
        return out
    base = models / f"{shape}.q4_k_m.gguf"
    if not base.is_file():
        tmp = base.with_suffix(".tmp")
        cargo(["run", "--release", "-p", "hearth-fixtures", "--example", "large_model", "--",
               "--shape", shape, str(tmp)])
        tmp.rename(base)
    if out != base:
        run(["nice", "-n", "19", hearth, "quantize", "--type", ty, base, out])
    return out


# ---------------------------------------------------------------------------------------------
# The runs


def run_llama(llama_bench: Path, model: Path, a: argparse.Namespace) -> dict:
    """llama-bench's mean tokens/s: prefill of the prompt from an empty cache, and decode of
    the generated tokens after `decode_after` tokens (`-d`, filled untimed), each after its own
    warm-up, over `reps` repetitions."""
    env = dict(os.environ, GGML_VK_VISIBLE_DEVICES=a.vk_device)
    out = {}
    for phase, flags in (("prefill", ["-p", a.prompt_tokens, "-n", 0]),
                         ("decode", ["-p", 0, "-n", a.gen_tokens, "-d", a.decode_after])):
        cmd = [llama_bench, "-m", model, "-ngl", 99, "-fa", a.flash_attn, "-r", a.reps,
               "-o", "json"] + flags
        proc = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"llama-bench failed:\n{proc.stderr[-4000:]}")
        (test,) = json.loads(proc.stdout)
        if "Vulkan" not in test.get("backends", ""):
            sys.exit(f"llama-bench ran on {test.get('backends')!r}, not Vulkan")
        out[phase] = test["avg_ts"]
        out[phase + "_stddev"] = test["stddev_ts"]
        out["device"] = test.get("gpu_info", "?")
    return out


def hearth_bench(hearth: Path, model: Path, prompt: int, gen: int, reps: int) -> dict:
    """`hearth bench`'s report: prefill of `prompt` tokens from an empty cache, then `gen`
    tokens decoded after it, after a warm-up, over `reps` repetitions."""
    cmd = [hearth, "bench", "--model", model, "--prompt-tokens", prompt, "--gen-tokens", gen,
           "--reps", reps, "--json"]
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"hearth bench failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_hearth(hearth: Path, model: Path, a: argparse.Namespace) -> dict:
    """As run_llama: one run where decode follows the prompt, else a run for each phase (the
    prefill run decoding a single token)."""
    pre = hearth_bench(hearth, model, a.prompt_tokens,
                       a.gen_tokens if a.decode_after == a.prompt_tokens else 1, a.reps)
    dec = (pre if a.decode_after == a.prompt_tokens
           else hearth_bench(hearth, model, a.decode_after, a.gen_tokens, a.reps))
    return {
        "prefill": pre["prefill_tokens_per_s"],
        "prefill_stddev": pre["prefill_tokens_per_s_stddev"],
        "decode": dec["decode_tokens_per_s"],
        "decode_stddev": dec["decode_tokens_per_s_stddev"],
        "device": pre["adapter"],
    }


def rate(r: float) -> str:
    return f"{r:.3g}" if r < 100 else f"{r:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated SHAPE.TYPE names (default: %(default)s)")
    p.add_argument("--prompt-tokens", type=int, default=512,
                   help="tokens of the prefill test's prompt (default 512)")
    p.add_argument("--gen-tokens", type=int, default=16,
                   help="tokens of the decode test (default 16)")
    p.add_argument("--decode-after", type=int, default=32,
                   help="tokens in the cache before the decode test (default 32)")
    p.add_argument("--reps", type=int, default=3,
                   help="timed repetitions within each run, after a warm-up (default 3)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                   help="parallel compile jobs for the llama-bench build")
    p.add_argument("--vk-device", default="0",
                   help="GGML_VK_VISIBLE_DEVICES for llama-bench (default 0; ggml-vulkan "
                        "otherwise hides CPU-type devices such as lavapipe)")
    p.add_argument("--flash-attn", default="off", choices=["off", "on", "auto"],
                   help="llama-bench's -fa (default off: with it on, ggml-vulkan 0.3.36 "
                        "crashes on lavapipe decoding after a prompt)")
    p.add_argument("--hearth", type=Path,
                   help="the hearth binary to run (default: build it with cargo)")
    p.add_argument("--build-only", action="store_true",
                   help="build llama-bench and Hearth and make the models, then stop")
    p.add_argument("--json", type=Path, help="also write every measurement to this file")
    a = p.parse_args()

    llama_bench = build_llama_bench(a.jobs)
    hearth = a.hearth or build_hearth()
    names = [m for m in a.models.split(",") if m]
    models = {name: model_path(name, hearth) for name in names}
    if a.build_only:
        return

    print(f"prefill: a {a.prompt_tokens}-token prompt from an empty cache; decode: "
          f"{a.gen_tokens} tokens after {a.decode_after}; mean tokens/s of {a.reps} "
          f"repetitions after a warm-up; {a.rounds} rounds, the engines alternating",
          flush=True)
    results = {name: [] for name in names}
    devices = set()
    for r in range(a.rounds):
        for name, path in models.items():
            # Alternate which engine goes first, so neither always runs on a warmer machine.
            order = ["llama", "hearth"] if r % 2 == 0 else ["hearth", "llama"]
            got = {}
            for engine in order:
                got[engine] = (run_llama(llama_bench, path, a) if engine == "llama"
                               else run_hearth(hearth, path, a))
                devices.add(f"{engine}: {got[engine]['device']}")
            results[name].append(got)
            h, l = got["hearth"], got["llama"]
            print(f"round {r + 1}  {name:<20} "
                  f"prefill llama.cpp {rate(l['prefill']):>7} hearth {rate(h['prefill']):>7} "
                  f"x{h['prefill'] / l['prefill']:.2f}   "
                  f"decode llama.cpp {rate(l['decode']):>7} hearth {rate(h['decode']):>7} "
                  f"x{h['decode'] / l['decode']:.2f}", flush=True)

    print("\ndevices: " + "; ".join(sorted(devices)))
    print("tokens/s, mean over rounds; ratio = Hearth / llama.cpp, mean of the rounds' ratios "
          "(min-max)\n")
    head = (f"{'model':<20} | {'prefill llama.cpp':>17} {'hearth':>8} {'ratio':>18} | "
            f"{'decode llama.cpp':>16} {'hearth':>8} {'ratio':>18}")
    print(head)
    print("-" * len(head))
    for name, rounds in results.items():
        cells = []
        for phase in ("prefill", "decode"):
            l = [x["llama"][phase] for x in rounds]
            h = [x["hearth"][phase] for x in rounds]
            ratios = [hh / ll for hh, ll in zip(h, l)]
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
            cells.append(f"{rate(mean(l)):>{16 if phase == 'decode' else 17}} "
                         f"{rate(mean(h)):>8} {mean(ratios):>6.2f} {spread:>10}")
        print(f"{name:<20} | {cells[0]} | {cells[1]}")
    if a.json:
        a.json.write_text(json.dumps({"prompt_tokens": a.prompt_tokens,
                                      "gen_tokens": a.gen_tokens,
                                      "decode_after": a.decode_after, "reps": a.reps,
                                      "rounds": results}, indent=1))


if __name__ == "__main__":
    main()
