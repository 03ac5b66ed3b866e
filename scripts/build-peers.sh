#!/usr/bin/env bash
# Builds the real-stack peers kts is tested against, from the Go module proxy by exact version, with the
# ordinary go client; no third-party source lives in this repository, only our tools modules:
#   scripts/peers/containerd/  containerd v2.4.2: containerd, ctr, containerd-shim-runc-v2
#   scripts/peers/critools/    cri-tools v1.37.0: crictl, critest (a `go test -c` binary)
#   scripts/peers/jaeger/      Jaeger v1.75.0: jaeger (the OTel-collector based all-in-one; no UI assets)
#   scripts/peers/prometheus/  Prometheus v0.316.0 (the Go module tag of 3.16.0): prometheus, promtool (no web UI;
#                              the HTTP API works)
# Usage: bash scripts/build-peers.sh [CACHE_DIR]   (default $KTS_PEERS_DIR, else /var/cache/kts/peers)
# The binaries land in CACHE_DIR/bin. Each module has a stamp (go version, build command, and the sha256
# of its go.mod and go.sum); a module whose stamp matches is not rebuilt, so a second run takes seconds.
# A module that cannot be built stops the script with one line naming it and the error (the full log
# stays in CACHE_DIR/<module>.log); nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR="${1:-${KTS_PEERS_DIR:-/var/cache/kts/peers}}"
BIN_DIR="$CACHE_DIR/bin"
PEERS_SRC="$(pwd)/scripts/peers"
CONTAINERD_TAGS="no_btrfs no_devmapper no_zfs"

if ! command -v go >/dev/null; then
  echo "build-peers: Go 1.26.7 or newer is required to build the peers (go not found)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"

# stamp_of <module> <binaries...>: what decides whether the module's binaries are up to date.
stamp_of() {
  local module=$1
  shift
  { go env GOVERSION; echo "tags=$CONTAINERD_TAGS binaries=$*"; sha256sum "$PEERS_SRC/$module/go.mod" "$PEERS_SRC/$module/go.sum" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1
}

# up_to_date <module> <stamp> <binaries...>
up_to_date() {
  local module=$1 stamp=$2 binary
  shift 2
  [[ -f "$CACHE_DIR/$module.stamp" && "$(cat "$CACHE_DIR/$module.stamp")" == "$stamp" ]] || return 1
  for binary in "$@"; do [[ -x "$BIN_DIR/$binary" ]] || return 1; done
}

# fail <module> <pinned module path> <log>: one line naming the module, its pin and the first error line go printed.
fail() {
  local module=$1 pinned=$2 log=$3 reason
  reason="$(grep -m1 -E 'error|cannot|missing|not found|FAIL|no required|invalid' "$log" || tail -n1 "$log")"
  echo "build-peers: $module ($(grep -m1 -E "^\s+$pinned v" "$PEERS_SRC/$module/go.mod" | awk '{print $1 "@" $2}')) failed: ${reason:-unknown error} (log: $log)" >&2
  exit 1
}

# build_peer <module> <pinned module path> <what> <binaries...> -- <command...>: runs the command in the
# module's tools directory unless the module's stamp and binaries say it is up to date.
build_peer() {
  local module=$1 pinned=$2 what=$3 stamp log="$CACHE_DIR/$1.log" binaries=()
  shift 3
  while [[ $1 != -- ]]; do binaries+=("$1"); shift; done
  shift
  stamp="$(stamp_of "$module" "${binaries[@]}")"
  if up_to_date "$module" "$stamp" "${binaries[@]}"; then echo "build-peers: $what up to date"; return; fi
  echo "build-peers: building $what (a few minutes cold)"
  local started=$SECONDS
  (cd "$PEERS_SRC/$module" && "$@") >"$log" 2>&1 || fail "$module" "$pinned" "$log"
  echo "$stamp" >"$CACHE_DIR/$module.stamp"
  echo "build-peers: $what built in $((SECONDS - started)) s"
}

compile_critools() {
  go build -o "$BIN_DIR/" sigs.k8s.io/cri-tools/cmd/crictl && go test -c -o "$BIN_DIR/critest" sigs.k8s.io/cri-tools/cmd/critest
}

export GOFLAGS=-mod=readonly
build_peer containerd github.com/containerd/containerd/v2 "containerd, ctr, containerd-shim-runc-v2" containerd ctr containerd-shim-runc-v2 -- \
  env CGO_ENABLED=1 go build -tags "$CONTAINERD_TAGS" -o "$BIN_DIR/" github.com/containerd/containerd/v2/cmd/containerd \
  github.com/containerd/containerd/v2/cmd/ctr github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
build_peer critools sigs.k8s.io/cri-tools "crictl and critest" crictl critest -- compile_critools
build_peer jaeger github.com/jaegertracing/jaeger jaeger jaeger -- go build -o "$BIN_DIR/" github.com/jaegertracing/jaeger/cmd/jaeger
build_peer prometheus github.com/prometheus/prometheus "prometheus and promtool" prometheus promtool -- \
  go build -o "$BIN_DIR/" github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
echo "build-peers: done ($BIN_DIR)"
