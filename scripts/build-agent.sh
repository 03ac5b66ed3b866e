#!/usr/bin/env bash
# Builds the microVM guest's task agent into dist/agent/, the directory scripts/build-guest.sh
# installs as /kts/agent (KTS_GUEST_AGENT_DIR=dist/agent):
#   main.mjs          src/agent/main.ts and its dependencies in one ESM file (esbuild)
#   agent.proto       the protocol, loaded at run time next to main.mjs
#   kts-sandbox-init  the runc sandbox's namespace holder (scripts/build-native.sh builds it)
#   runc              this host's runc, so the guest runs the same one
# Idempotent: each output is rebuilt only when an input is newer.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=dist/agent
BUNDLE=$OUT_DIR/main.mjs
mkdir -p "$OUT_DIR"

die() { echo "build-agent: $*" >&2; exit 1; }

# True when $1 is missing or older than any of the following files.
stale() {
  local out=$1 input; shift
  [[ -e $out ]] || return 0
  for input in "$@"; do [[ $input -nt $out ]] && return 0; done
  return 1
}

copy_if_stale() {
  local src=$1 out=$2
  [[ -e $src ]] || die "$src is missing"
  if stale "$out" "$src"; then
    cp -f "$src" "$out.tmp" && mv -f "$out.tmp" "$out"
    echo "build-agent: copied $src to $out"
  fi
}

bundle_inputs() {
  find src -name '*.ts' ! -name '*.spec.ts' -print
  echo package.json package-lock.json
}

build_bundle() {
  local inputs version
  mapfile -t inputs < <(bundle_inputs)
  stale "$BUNDLE" "${inputs[@]}" || return 0
  [[ -x node_modules/.bin/esbuild ]] || die "esbuild is not installed (npm ci)"
  version="$(node -p 'require("./package.json").version')+$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  # The banner gives CJS dependencies (grpc-js, protobufjs, pino) the require/__dirname they expect in ESM.
  node_modules/.bin/esbuild src/agent/main.ts --bundle --platform=node --format=esm --target=node20 \
    --outfile="$BUNDLE.tmp" --log-level=warning --legal-comments=none \
    --define:process.env.KTS_AGENT_VERSION="\"$version\"" \
    --banner:js="import { createRequire as __ktsCreateRequire } from 'node:module'; import { fileURLToPath as __ktsFileURLToPath } from 'node:url'; import { dirname as __ktsDirname } from 'node:path'; const require = __ktsCreateRequire(import.meta.url); const __filename = __ktsFileURLToPath(import.meta.url); const __dirname = __ktsDirname(__filename);"
  mv -f "$BUNDLE.tmp" "$BUNDLE"
  echo "build-agent: bundled $BUNDLE ($version)"
}

build_bundle
copy_if_stale proto/kts/agent/v1/agent.proto "$OUT_DIR/agent.proto"
copy_if_stale dist/native/kts-sandbox-init "$OUT_DIR/kts-sandbox-init"
runc_path=$(command -v runc) || die "runc is not installed"
copy_if_stale "$runc_path" "$OUT_DIR/runc"
echo "build-agent: $BUNDLE is $(stat -c %s "$BUNDLE") bytes"
