#!/usr/bin/env bash
# Builds the WebAssembly (WASI preview 1) test images from the hand-written WebAssembly text in
# src/backends/wasm/testdata/: <outDir>/wasm-<name> for hello, trap, spin, sleep, cat and grow.
# Each is an OCI image layout whose one layer holds /<name>.wasm and whose config names it as
# Entrypoint (the "compat" wasm image variant containerd and crun also run). No downloads:
# wat2wasm comes from the wabt npm devDependency. Deterministic like build-images.sh; skips
# images that are up to date.
# Usage: scripts/build-wasm-images.sh <outDir>
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 <outDir>" >&2
  exit 2
fi

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAT_DIR="$REPO_DIR/src/backends/wasm/testdata"
WAT2WASM="$REPO_DIR/node_modules/.bin/wat2wasm"
OUT_DIR=$1
MODULES=(hello trap spin sleep cat grow)
IMAGE_TAG=latest

die() { echo "build-wasm-images: $*" >&2; exit 1; }

[[ -x "$WAT2WASM" ]] || die "$WAT2WASM is missing (run npm ci: wabt is a devDependency)"
for tool in tar gzip sha256sum stat; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# Moves a file into the layout's blobs/sha256/<hex> and prints the hex.
write_blob() { # <blobsDir> <file>
  local hex
  hex=$(sha256_of "$2")
  mv "$2" "$1/$hex"
  echo "$hex"
}

up_to_date() { # <layoutDir> <stamp>
  [[ -f "$1/.kts-build-stamp" && "$(cat "$1/.kts-build-stamp")" == "$2" && -f "$1/index.json" ]]
}

build_image() { # <module name>
  local name=$1 image="wasm-$1" wat="$WAT_DIR/$1.wat"
  local layout_dir="$OUT_DIR/$image" stamp
  [[ -f "$wat" ]] || die "$wat is missing"
  stamp="wat=$(sha256_of "$wat") script=$(sha256_of "${BASH_SOURCE[0]}") wabt=$(node -p "require('$REPO_DIR/node_modules/wabt/package.json').version")"
  if up_to_date "$layout_dir" "$stamp"; then
    echo "$image:$IMAGE_TAG up to date"
    return
  fi
  local work="$WORK_DIR/$name" rootfs layout blobs module="/$name.wasm"
  rootfs="$work/rootfs"; layout="$work/layout"; blobs="$layout/blobs/sha256"
  mkdir -p "$rootfs" "$blobs"
  "$WAT2WASM" "$wat" -o "$rootfs$module"
  chmod 0755 "$rootfs"
  chmod 0644 "$rootfs$module"

  tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=gnu -C "$rootfs" -cf "$work/layer.tar" "${module#/}"
  local diff_id layer_size layer_hex config_size config_hex manifest_size manifest_hex
  diff_id=$(sha256_of "$work/layer.tar")
  gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
  layer_size=$(size_of "$work/layer.tar.gz")
  layer_hex=$(write_blob "$blobs" "$work/layer.tar.gz")

  printf '%s' "{\"architecture\":\"wasm\",\"os\":\"wasip1\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Entrypoint\":[\"$module\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"scripts/build-wasm-images.sh: wat2wasm $name.wat\"}]}" >"$work/config.json"
  config_size=$(size_of "$work/config.json")
  config_hex=$(write_blob "$blobs" "$work/config.json")

  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_hex\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer_hex\",\"size\":$layer_size}],\"annotations\":{\"module.wasm.image/variant\":\"compat\"}}" >"$work/manifest.json"
  manifest_size=$(size_of "$work/manifest.json")
  manifest_hex=$(write_blob "$blobs" "$work/manifest.json")

  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_hex\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"wasm\",\"os\":\"wasip1\"},\"annotations\":{\"io.kts.image.name\":\"$image\",\"org.opencontainers.image.ref.name\":\"$IMAGE_TAG\"}}]}" >"$layout/index.json"
  printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  echo "$((layer_size + config_size + manifest_size))" >"$layout/.kts-image-size"
  echo "$stamp" >"$layout/.kts-build-stamp"

  # Swap the new layout in with renames so a reader never sees a half-written one.
  if [[ -e "$layout_dir" ]]; then mv "$layout_dir" "$work/old"; fi
  mv "$layout" "$layout_dir"
  echo "$image:$IMAGE_TAG built: sha256:$manifest_hex (module $module, $(size_of "$layout_dir/blobs/sha256/$layer_hex") byte layer)"
}

mkdir -p "$OUT_DIR"
WORK_DIR=$(mktemp -d "$OUT_DIR/.build-wasm.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT
for name in "${MODULES[@]}"; do build_image "$name"; done
