#!/usr/bin/env bash
# Builds the native helpers under dist/native; rebuilds only what is older than its source.
# C helpers: one .c file each, built with cc. Rust helpers: one crate each (Cargo.lock committed,
# built --locked); cargo's target directory lives in a cache outside the checkout, so a fresh clone
# (CI) reuses what an earlier build of the same pins compiled. KTS_BUILD_WASM_RUNNER=0 leaves out the
# wasm runner (wasmtime: ~6 min the first time on 2 cores); the quick start does, as its pod is runc.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

C_HELPERS=(
  "src/backends/runc/sandbox-init.c:kts-sandbox-init"
  "src/host/beneath.c:kts-beneath"
  "src/backends/runc/console.c:kts-console"
  "src/host/log-pump.c:kts-log-pump"
)
# N-API addons the daemon loads (require): one .c file each, against node's headers (Debian's nodejs package).
NODE_ADDONS=(
  "src/host/peercred.c:kts-peercred.node"
)
RUST_HELPERS=(
  "src/backends/wasm/runner:kts-wasm-runner"
  "src/images/unpack:kts-unpack"
)

mkdir -p dist/native
for entry in "${C_HELPERS[@]}"; do
  src="${entry%%:*}" out="dist/native/${entry##*:}"
  [[ -f "$src" ]] || continue
  if [[ ! -x "$out" || "$src" -nt "$out" ]]; then
    cc -O2 -Wall -Wextra -o "$out.tmp" "$src"
    mv -f "$out.tmp" "$out"
    echo "built $out"
  fi
done

# The headers of the node that runs kts: /usr/include/node for Debian's (and NodeSource's) /usr/bin/node.
NODE_INCLUDE="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node"
for entry in "${NODE_ADDONS[@]}"; do
  src="${entry%%:*}" out="dist/native/${entry##*:}"
  if [[ ! -f "$out" || "$src" -nt "$out" ]]; then
    [[ -f "$NODE_INCLUDE/node_api.h" ]] || { echo "build-native: node's headers ($NODE_INCLUDE/node_api.h) are needed to build $out" >&2; exit 1; }
    cc -O2 -Wall -Wextra -shared -fPIC -I"$NODE_INCLUDE" -o "$out.tmp" "$src"
    mv -f "$out.tmp" "$out"
    echo "built $out"
  fi
done

export CARGO_TARGET_DIR="${KTS_CACHE_DIR:-/var/cache/kts}/cargo-target"
for entry in "${RUST_HELPERS[@]}"; do
  crate="${entry%%:*}" name="${entry##*:}"
  [[ -f "$crate/Cargo.toml" ]] || continue
  if [[ "$name" == kts-wasm-runner && "${KTS_BUILD_WASM_RUNNER:-1}" == 0 ]]; then
    [[ -x "dist/native/$name" ]] || echo "build-native: left out $name (wasm pods need it: bash scripts/build-native.sh)"
    continue
  fi
  if ! command -v cargo >/dev/null; then echo "build-native: cargo is needed to build $name (install Rust with rustup)" >&2; exit 1; fi
  cargo build --quiet --release --locked --manifest-path "$crate/Cargo.toml"
  if ! cmp -s "$CARGO_TARGET_DIR/release/$name" "dist/native/$name"; then
    install -m 0755 "$CARGO_TARGET_DIR/release/$name" "dist/native/$name"
    echo "built dist/native/$name"
  fi
done
