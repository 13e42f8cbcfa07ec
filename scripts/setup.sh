#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks, for `make demo` (`setup.sh demo`: the wasm32
# target, wasm-bindgen-cli at the version Cargo.toml pins, Node.js) or for `make test`
# (`setup.sh test`: also Python, lavapipe, Chromium, and the aarch64 target with a cross linker
# and qemu). Does nothing for what is present.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-test}

command -v cargo >/dev/null || {
  echo "Rust is needed: https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)" >&2
  exit 1
}

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v cc >/dev/null || need_apt+=(build-essential)
if [ "$what" = test ]; then
  # Python for the gguf-py checks, lavapipe (Vulkan on the CPU) for the GPU tests, Chromium
  # for the browser tests.
  command -v python3 >/dev/null || need_apt+=(python3)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
  command -v make >/dev/null || need_apt+=(make)
  dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers libvulkan1)
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
  # A linker, C library and emulator for the aarch64 (NEON) kernels' tests.
  command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
  dpkg -s gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null 2>&1 ||
    need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need_apt[@]}"
fi

[ "$what" = test ] && { rustup component add clippy rustfmt >/dev/null 2>&1 || true; }
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$what" = test ]; then
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu
fi
# wasm-bindgen-cli must be exactly the version of the wasm-bindgen crate pinned in Cargo.toml.
want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
  cargo install wasm-bindgen-cli --version "$want"
fi
