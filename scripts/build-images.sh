#!/usr/bin/env bash
# Builds the OCI image layouts kuasar-ts runs (no registry is reachable): <outDir>/busybox.
# Deterministic (sorted tar, fixed mtime, numeric owner 0, gzip -n) so the digest only changes when
# /bin/busybox or this script does; skips the build when the stamp says the layout is up to date.
# Usage: scripts/build-images.sh <outDir>
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 <outDir>" >&2
  exit 2
fi

BUSYBOX_BIN=${BUSYBOX_BIN:-/bin/busybox}
IMAGE_NAME=busybox
IMAGE_TAG=latest
OUT_DIR=$1
LAYOUT_DIR="$OUT_DIR/$IMAGE_NAME"
STAMP_FILE="$LAYOUT_DIR/.kts-build-stamp"

# Applets linked under /bin; each must exist in this busybox build.
APPLETS=(
  sh ash echo sleep cat ls ps id hostname wc true false env printf head tail grep egrep fgrep sed awk
  cut sort uniq tr tee test '[' expr seq yes date uname whoami pwd mkdir rmdir rm cp mv ln touch chmod
  chown find xargs basename dirname readlink realpath stat df du free uptime top kill pidof nproc
  mount umount dmesg ip ifconfig ping nc wget vi less more md5sum sha256sum base64 gzip gunzip zcat
  tar timeout renice usleep sync which mktemp mkfifo od hexdump strings dd
)

die() { echo "build-images: $*" >&2; exit 1; }

[[ -x "$BUSYBOX_BIN" ]] || die "$BUSYBOX_BIN is not an executable (install busybox-static)"
for tool in tar gzip sha256sum stat; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) ARCH=$(uname -m) ;;
esac

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

STAMP="busybox=$(sha256_of "$BUSYBOX_BIN") script=$(sha256_of "${BASH_SOURCE[0]}") arch=$ARCH"

if [[ -f "$STAMP_FILE" && "$(cat "$STAMP_FILE")" == "$STAMP" && -f "$LAYOUT_DIR/index.json" ]]; then
  manifest_digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' "$LAYOUT_DIR/index.json" | head -n1 | cut -d'"' -f4)
  if [[ -f "$LAYOUT_DIR/blobs/sha256/${manifest_digest#sha256:}" ]]; then
    echo "$IMAGE_NAME:$IMAGE_TAG up to date: $manifest_digest ($(cat "$LAYOUT_DIR/.kts-image-size") bytes)"
    exit 0
  fi
fi

mkdir -p "$OUT_DIR"
WORK_DIR=$(mktemp -d "$OUT_DIR/.build-$IMAGE_NAME.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT
ROOTFS="$WORK_DIR/rootfs"
NEW_LAYOUT="$WORK_DIR/layout"
BLOBS="$NEW_LAYOUT/blobs/sha256"
mkdir -p "$ROOTFS" "$BLOBS"

build_rootfs() {
  local applet available
  available=$("$BUSYBOX_BIN" --list)
  mkdir -p "$ROOTFS"/{bin,etc,tmp,proc,dev,sys,root,var,run,home}
  cp "$BUSYBOX_BIN" "$ROOTFS/bin/busybox"
  for applet in "${APPLETS[@]}"; do
    grep -qxF -- "$applet" <<<"$available" || die "busybox has no applet '$applet'"
    ln -s busybox "$ROOTFS/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/home:/bin/false' >"$ROOTFS/etc/passwd"
  printf '%s\n' 'root:x:0:' 'tty:x:5:' 'nogroup:x:65534:' >"$ROOTFS/etc/group"
  printf '%s\n' '127.0.0.1 localhost' '::1 localhost' >"$ROOTFS/etc/hosts"
  : >"$ROOTFS/etc/resolv.conf"
  : >"$ROOTFS/etc/hostname"
  # Modes are set explicitly so the umask of whoever builds does not change the digest.
  find "$ROOTFS" -type d -exec chmod 0755 {} +
  find "$ROOTFS/etc" -type f -exec chmod 0644 {} +
  chmod 0755 "$ROOTFS/bin/busybox"
  chmod 1777 "$ROOTFS/tmp"
  chmod 0700 "$ROOTFS/root"
}

write_blob() { # <file> → prints its digest hex; moves the file into blobs/sha256/<hex>
  local hex
  hex=$(sha256_of "$1")
  mv "$1" "$BLOBS/$hex"
  echo "$hex"
}

build_rootfs

tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$ROOTFS" -cf "$WORK_DIR/layer.tar" bin dev etc home proc root run sys tmp var
diff_id=$(sha256_of "$WORK_DIR/layer.tar")
gzip -n -9 -c "$WORK_DIR/layer.tar" >"$WORK_DIR/layer.tar.gz"
layer_size=$(size_of "$WORK_DIR/layer.tar.gz")
layer_hex=$(write_blob "$WORK_DIR/layer.tar.gz")

printf '%s' "{\"architecture\":\"$ARCH\",\"os\":\"linux\",\"created\":\"1970-01-01T00:00:00Z\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]},\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"scripts/build-images.sh: busybox rootfs\"}]}" >"$WORK_DIR/config.json"
config_size=$(size_of "$WORK_DIR/config.json")
config_hex=$(write_blob "$WORK_DIR/config.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_hex\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer_hex\",\"size\":$layer_size}]}" >"$WORK_DIR/manifest.json"
manifest_size=$(size_of "$WORK_DIR/manifest.json")
manifest_hex=$(write_blob "$WORK_DIR/manifest.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_hex\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"$ARCH\",\"os\":\"linux\"},\"annotations\":{\"io.kts.image.name\":\"$IMAGE_NAME\",\"org.opencontainers.image.ref.name\":\"$IMAGE_TAG\"}}]}" >"$NEW_LAYOUT/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$NEW_LAYOUT/oci-layout"

image_size=$((layer_size + config_size + manifest_size))
echo "$image_size" >"$NEW_LAYOUT/.kts-image-size"
echo "$STAMP" >"$NEW_LAYOUT/.kts-build-stamp"

# Swap the new layout in with renames so a reader never sees a half-written one.
if [[ -e "$LAYOUT_DIR" ]]; then
  mv "$LAYOUT_DIR" "$WORK_DIR/old"
fi
mv "$NEW_LAYOUT" "$LAYOUT_DIR"

echo "$IMAGE_NAME:$IMAGE_TAG built: sha256:$manifest_hex ($image_size bytes; layer sha256:$layer_hex $layer_size bytes, $((${#APPLETS[@]})) applets)"
