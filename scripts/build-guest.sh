#!/usr/bin/env bash
# Builds the microVM guest that the vmm backend boots under QEMU (-M microvm):
#   <outDir>/vmlinuz     the Debian kernel (linux-image-amd64), as packaged (compressed bzImage)
#   <outDir>/vmlinux     the same kernel uncompressed (ELF with a PVH entry note): QEMU boots it directly,
#                        which under TCG saves the ~2.5 s the guest spends unpacking vmlinuz; absent when
#                        the kernel cannot be unpacked or has no CONFIG_PVH (then boot vmlinuz)
#   <outDir>/initrd.img  a small initramfs (busybox, guest/init, the modules that mount the root)
#   <outDir>/rootfs.img  the guest root: a read-only ext4 image on virtio-blk holding busybox, the
#                        kernel modules, node + its libs, crun + its libs (the agent's OCI runtime: C, it
#                        starts in milliseconds where Go's runc takes a second under TCG), runc + its libs
#                        (the fallback, [hypervisor] guest_oci_runtime = "runc"), and the agent in /kts/agent
# The root is an image rather than a big initramfs because node alone is ~100 MB: from a disk only the
# pages the guest touches are read, and they stay evictable page cache, so a 256 MB guest has room.
# The agent comes from $KTS_GUEST_AGENT_DIR (copied to /kts/agent) or, when unset, guest/standin-agent.mjs
# (copied as /kts/agent/main.mjs). Cached: rebuilds only when a hashed input changes (see STAMP).
# Usage: scripts/build-guest.sh [outDir]   (default /var/lib/kts/guest)
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO_DIR/scripts/lib.sh"
GUEST_DIR="$REPO_DIR/guest"
OUT_DIR=$(realpath -m "${1:-/var/lib/kts/guest}")
STAMP_FILE="$OUT_DIR/.kts-build-stamp"
PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static cpio runc crun e2fsprogs kmod xz-utils binutils)

# Loaded by the initramfs to reach the root image.
INITRD_MODULES=(virtio_mmio virtio_blk crc32c_generic ext4)
# Loaded by guest/init from the root image at every boot: agent channel, 9p share, entropy.
BOOT_MODULES=(virtio_console 9pnet_virtio 9p virtio_rng)
# Shipped in the root image for `modprobe` by the agent, not loaded at boot.
EXTRA_MODULES=(overlay veth bridge virtio_net tun nf_conntrack br_netfilter)

die() { echo "build-guest: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, builds an image owned by root)"

install_missing_packages() { ensure_debian_packages build-guest "${PACKAGES[@]}"; }

# The kernel the linux-image-amd64 meta-package points at, e.g. 6.1.0-56-amd64.
kernel_version() {
  local version
  version=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | grep -o 'linux-image-[^ ,]*' | sed -n 1p)
  version=${KTS_GUEST_KERNEL_VERSION:-${version#linux-image-}}
  [[ -f /boot/vmlinuz-$version && -d /lib/modules/$version ]] || die "kernel $version is not installed (/boot/vmlinuz-$version)"
  echo "$version"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Hash of a directory's file names, modes and contents, independent of mtimes.
tree_hash() {
  (cd "$1" && find . \( -type f -o -type l \) -printf '%p %m %l\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r cat) | sha256sum | cut -d' ' -f1
}

# Prints the .ko paths (relative to /lib/modules/<ver>) for the named modules and everything they depend
# on, dependencies first, each once. Built-in modules print nothing.
resolve_modules() {
  local modules_dir=$1; shift
  local name line ko dep
  declare -A seen=()
  local ordered=()
  visit() {
    local ko=$1 line dep
    [[ -n ${seen[$ko]:-} ]] && return
    seen[$ko]=1
    line=$(grep -m1 "^$ko:" "$modules_dir/modules.dep") || die "module file $ko is not in modules.dep"
    for dep in ${line#*:}; do visit "$dep"; done
    ordered+=("$ko")
  }
  for name in "$@"; do
    # modules.dep names files; a module name's '_' may be '-' in its file name.
    ko=$(grep -m1 -E "(^|/)${name//[-_]/[-_]}\.ko:" "$modules_dir/modules.dep" | cut -d: -f1) || true
    if [[ -z $ko ]]; then
      grep -qE "/${name//[-_]/[-_]}\.ko$" "$modules_dir/modules.builtin" && continue
      die "kernel module $name not found"
    fi
    visit "$ko"
  done
  printf '%s\n' "${ordered[@]}"
}

# Copies the named modules and their dependencies into <root>/lib/modules/<ver> and runs depmod there,
# so busybox modprobe in the guest resolves dependencies from a small modules.dep.
install_modules() {
  local root=$1; shift
  local src="/lib/modules/$KERNEL_VERSION" dst="$root/lib/modules/$KERNEL_VERSION" files ko
  files=$(resolve_modules "$src" "$@")
  mkdir -p "$dst"
  for ko in $files; do
    mkdir -p "$dst/$(dirname "$ko")"
    cp "$src/$ko" "$dst/$ko"
  done
  cp "$src/modules.builtin" "$src/modules.builtin.modinfo" "$src/modules.order" "$dst/"
  depmod -b "$root" "$KERNEL_VERSION"
}

install_busybox() {
  local root=$1 applet
  mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    [[ -e $root/$applet || -L $root/$applet ]] || ln -s /bin/busybox "$root/$applet"
  done
}

# Copies an executable to the same path in <root>, with every shared library ldd names (and the loader).
install_binary() {
  local root=$1 binary=$2 target=$3 library
  mkdir -p "$root/$(dirname "$target")"
  cp -L "$binary" "$root/$target"
  for library in $( (ldd "$binary" 2>/dev/null || true) | grep -oE '/[^ ]+' | sort -u); do # none when static
    [[ -e $root/$library ]] && continue
    mkdir -p "$root/$(dirname "$library")"
    cp -L "$library" "$root/$library"
  done
}

build_initrd() {
  local root="$WORK_DIR/initrd"
  mkdir -p "$root"/{proc,sys,dev,newroot}
  install_busybox "$root"
  install_modules "$root" "${INITRD_MODULES[@]}"
  mkdir -p "$root/kts"
  printf '%s\n' "${INITRD_MODULES[@]}" >"$root/kts/boot-modules"
  install -m 0755 "$GUEST_DIR/init" "$root/init"
  (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -n -6) >"$WORK_DIR/initrd.img"
}

build_rootfs_tree() {
  local root="$WORK_DIR/rootfs"
  mkdir -p "$root"/{proc,sys,dev,tmp,run,var,root,mnt,etc,kts/agent}
  install_busybox "$root"
  install_modules "$root" "${INITRD_MODULES[@]}" "${BOOT_MODULES[@]}" "${EXTRA_MODULES[@]}"
  printf '%s\n' "${BOOT_MODULES[@]}" >"$root/kts/boot-modules"
  install_binary "$root" "$NODE_BIN" /usr/bin/node
  strip --strip-all "$root/usr/bin/node" # its symbols and debug info are ~13 MB the guest never reads
  install_binary "$root" "$RUNC_BIN" /usr/sbin/runc
  install_binary "$root" "$CRUN_BIN" /usr/bin/crun
  install -m 0755 "$GUEST_DIR/init" "$root/kts/init"
  if [[ -n ${KTS_GUEST_AGENT_DIR:-} ]]; then
    cp -a "$KTS_GUEST_AGENT_DIR/." "$root/kts/agent/"
  else
    install -m 0644 "$GUEST_DIR/standin-agent.mjs" "$root/kts/agent/main.mjs"
  fi
  [[ -f $root/kts/agent/main.mjs ]] || die "the agent has no main.mjs ($AGENT_SOURCE)"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/:/bin/false' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'tty:x:5:' 'nogroup:x:65534:' >"$root/etc/group"
  printf '%s\n' '127.0.0.1 localhost' '::1 localhost' >"$root/etc/hosts"
  echo kts-guest >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  echo "$STAMP" >"$root/kts/build-stamp"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
}

# A read-only root needs neither a journal nor checksums (which would also need the crc32c module).
build_rootfs_image() {
  local root="$WORK_DIR/rootfs" used_kb inodes
  used_kb=$(du -sk --apparent-size "$root" | cut -f1)
  inodes=$(( $(find "$root" | wc -l) + 256 ))
  E2FSPROGS_FAKE_TIME=1 mkfs.ext4 -q -F -L kts-guest -b 4096 -m 0 -N "$inodes" -I 256 \
    -O ^has_journal,^metadata_csum,^resize_inode,^huge_file \
    -E root_owner=0:0,hash_seed=6b74732d-6775-6573-742d-000000000000 -U 6b74732d-6775-6573-742d-726f6f746673 \
    -d "$root" "$WORK_DIR/rootfs.img" "$(( used_kb + used_kb / 20 + 8192 ))K" >/dev/null
}

# vmlinuz is a boot stub followed by the compressed kernel; unpack the first xz or zstd stream in it.
extract_vmlinux() {
  local vmlinuz=$1 out=$2 offset
  grep -q '^CONFIG_PVH=y' "/boot/config-$KERNEL_VERSION" 2>/dev/null || return 1
  if offset=$(stream_offset "$vmlinuz" $'\xfd7zXZ'); then
    # xz stops reading at the end of the stream, so tail may die of SIGPIPE
    { tail -c "+$((offset + 1))" "$vmlinuz" || true; } | xz -dc --single-stream >"$out" 2>/dev/null || return 1
  elif offset=$(stream_offset "$vmlinuz" $'\x28\xb5\x2f\xfd') && command -v zstd >/dev/null; then
    # zstd stops at the end of the frame but reports the trailing bytes as an error
    { tail -c "+$((offset + 1))" "$vmlinuz" || true; } | zstd -dcq >"$out" 2>/dev/null || true
  else
    return 1
  fi
  [[ "$(head -c 4 "$out")" == $'\x7fELF' ]]
}

# Byte offset of the first occurrence of a magic string in a file; fails when there is none.
stream_offset() {
  local offset
  offset=$(LC_ALL=C grep -m1 -aboF "$2" "$1") || return 1
  offset=${offset%%:*}
  [[ $offset =~ ^[0-9]+$ ]] && echo "$offset"
}

install_kernel() {
  cp "/boot/vmlinuz-$KERNEL_VERSION" "$WORK_DIR/vmlinuz"
  if ! extract_vmlinux "$WORK_DIR/vmlinuz" "$WORK_DIR/vmlinux"; then
    echo "build-guest: could not unpack a PVH vmlinux from vmlinuz-$KERNEL_VERSION; only vmlinuz is available" >&2
    rm -f "$WORK_DIR/vmlinux"
  fi
}

install_missing_packages
KERNEL_VERSION=$(kernel_version)
NODE_BIN=$(readlink -f "$(command -v node)") || die "node not found"
RUNC_BIN=$(readlink -f "$(command -v runc)") || die "runc not found"
CRUN_BIN=$(readlink -f "$(command -v crun)") || die "crun not found"
AGENT_SOURCE=${KTS_GUEST_AGENT_DIR:-$GUEST_DIR/standin-agent.mjs}
if [[ -n ${KTS_GUEST_AGENT_DIR:-} ]]; then
  [[ -d $KTS_GUEST_AGENT_DIR ]] || die "KTS_GUEST_AGENT_DIR=$KTS_GUEST_AGENT_DIR is not a directory"
  agent_hash=$(tree_hash "$KTS_GUEST_AGENT_DIR")
else
  agent_hash=$(sha256_of "$GUEST_DIR/standin-agent.mjs")
fi
STAMP="script=$(sha256_of "${BASH_SOURCE[0]}") init=$(sha256_of "$GUEST_DIR/init") agent=$agent_hash"
STAMP+=" kernel=$KERNEL_VERSION:$(sha256_of "/boot/vmlinuz-$KERNEL_VERSION") node=$(sha256_of "$NODE_BIN")"
STAMP+=" runc=$(sha256_of "$RUNC_BIN") crun=$(sha256_of "$CRUN_BIN") busybox=$(sha256_of /bin/busybox)"

mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/.lock"
flock 9 # a concurrent build of the same outDir waits, then finds the stamp fresh

describe_outputs() {
  local file
  for file in vmlinuz vmlinux initrd.img rootfs.img; do
    if [[ -f $OUT_DIR/$file ]]; then printf '%s %s bytes; ' "$file" "$(stat -c %s "$OUT_DIR/$file")"; fi
  done
}

if [[ -f $STAMP_FILE && "$(cat "$STAMP_FILE")" == "$STAMP" && -f $OUT_DIR/vmlinuz && -f $OUT_DIR/initrd.img && -f $OUT_DIR/rootfs.img ]]; then
  echo "build-guest: up to date in $OUT_DIR ($(describe_outputs)kernel $KERNEL_VERSION)"
  exit 0
fi

started_ms=$(date +%s%3N)
WORK_DIR=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK_DIR"' EXIT
build_initrd
build_rootfs_tree
build_rootfs_image
install_kernel

# Renames over the old files, so a QEMU that has them open keeps reading them; the stamp goes last.
rm -f "$STAMP_FILE"
mv "$WORK_DIR"/{vmlinuz,initrd.img,rootfs.img} "$OUT_DIR/"
if [[ -f $WORK_DIR/vmlinux ]]; then mv "$WORK_DIR/vmlinux" "$OUT_DIR/"; else rm -f "$OUT_DIR/vmlinux"; fi
echo "$STAMP" >"$STAMP_FILE"
echo "build-guest: built in $OUT_DIR in $(( $(date +%s%3N) - started_ms )) ms ($(describe_outputs)kernel $KERNEL_VERSION, agent from $AGENT_SOURCE)"
