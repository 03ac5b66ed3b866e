#!/usr/bin/env bash
# Installs what kuasar-ts needs on Debian 12 (as root) and builds it: Debian packages, npm
# dependencies, the TypeScript, the native sandbox init, and the local busybox image.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

IMAGES_DIR="${KTS_IMAGES_DIR:-/var/lib/kts/images}"
# containernetworking-plugins: the CNI plugins ([network] cni = true); iproute2 and util-linux: ip, tc, nsenter, unshare.
PACKAGES=(runc busybox-static gcc libc6-dev tar gzip iproute2 iptables procps util-linux socat containernetworking-plugins)

need_node() {
  if ! command -v node >/dev/null; then echo "setup: Node.js 20 or newer is required (node not found)" >&2; exit 1; fi
  local major; major="$(node -p 'process.versions.node.split(".")[0]')"
  if (( major < 20 )); then echo "setup: Node.js 20 or newer is required (found $(node --version))" >&2; exit 1; fi
}

ensure_debian_packages setup "${PACKAGES[@]}"
need_node

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: building"
npm run --silent build
# The state directory holds unpacked images (setuid binaries) and the event log: root only (the daemon checks it too).
if [[ -z "${KTS_IMAGES_DIR:-}" ]]; then install -d -m 0700 /var/lib/kts && chmod 0700 /var/lib/kts; fi
bash scripts/build-images.sh "$IMAGES_DIR"
bash scripts/build-wasm-images.sh "$IMAGES_DIR"
# The microVM guest (kernel, initrd, root image with Node, runc and the agent); installs QEMU and the kernel package.
KTS_GUEST_AGENT_DIR="$(pwd)/dist/agent" bash scripts/build-guest.sh "${KTS_GUEST_DIR:-/var/lib/kts/guest}"
# The real-stack peers (containerd 2.4, crictl, critest) are for tests and the containerd node, not the
# quick start: scripts/test.sh and scripts/containerd-node.sh build them; KTS_BUILD_PEERS=1 builds them here.
if [[ "${KTS_BUILD_PEERS:-0}" == 1 ]]; then bash scripts/build-peers.sh; fi
echo "setup: done (kts is $(pwd)/bin/kts.js)"
