#!/usr/bin/env bash
# The trace picture in the README, end to end on this machine (as root; by hand, not part of CI):
#   bash scripts/docs-pictures.sh
# starts an in-memory Jaeger (the v1.75 binary scripts/build-peers.sh builds) on free loopback ports, a kts
# daemon exporting to it, and a containerd 2.4 node in front (scripts/containerd-node.sh, tracing to the same
# Jaeger); runs `crictl runp --runtime kts-vmm` with crictl's own tracing on, takes the pod start's trace id
# from `kts history` (SandboxStarted), waits until Jaeger holds the whole trace, and writes
#   docs/vm-pod-trace.png       the trace as Jaeger's query API returns it, drawn by scripts/trace-picture.mjs
#                               and screenshot by headless Chromium (installed here if missing)
#   docs/vm-pod-trace.html      the page that was screenshot (hover a row for its offset)
#   docs/vm-pod-timeline.txt    `kts timeline` of the same pod
# Everything it starts (Jaeger, kts, containerd, the pod, its bridge and mounts) lives under one temp
# directory and is torn down on exit, failed runs too. KTS_DOCS_TRACE_JSON=<file> also keeps Jaeger's answer.
# The kts daemon is started here rather than by containerd-node.sh: that one would inherit containerd's
# OTEL_SERVICE_NAME=containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

PEERS_DIR="${KTS_PEERS_DIR:-/var/cache/kts/peers}"
PEERS_BIN="$PEERS_DIR/bin"
IMAGES_DIR="${KTS_IMAGES_DIR:-/var/lib/kts/images}"
GUEST_DIR="${KTS_GUEST_DIR:-/var/lib/kts/guest}"
BRIDGE=ktsdocs0
SUBNET=10.88.217.0/24

say() { echo "docs-pictures: $*"; }
die() { echo "docs-pictures: $*" >&2; exit 1; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
kts() { node "$REPO/bin/kts.js" --socket "$KTS_SOCK" "$@"; }

[[ $(id -u) == 0 ]] || die "must run as root (containerd, QEMU, CNI)"
[[ -f "$REPO/dist/src/cli/main.js" && -f "$REPO/dist/agent/main.mjs" ]] || die "kts is not built: run scripts/setup.sh first"
[[ -f "$GUEST_DIR/rootfs.img" ]] || die "no microVM guest in $GUEST_DIR (scripts/setup.sh builds it)"
command -v chromium >/dev/null || ensure_debian_packages docs-pictures chromium
bash scripts/build-peers.sh "$PEERS_DIR" >/dev/null

# Short: QEMU's sockets under the kts root (vms/<64-hex id>/qmp.sock) must stay under 108 bytes.
WORK="$(mktemp -d /tmp/ktsdoc.XXXXXX)"
NODE_DIR="$WORK/node"
KTS_DIR="$WORK/k"
KTS_SOCK="$KTS_DIR/kts.sock"
NODE_ENV=(KTS_CTD_DIR="$NODE_DIR" KTS_CTD_START_KTS=0 KTS_CTD_KTS_SOCKET="$KTS_SOCK" KTS_CTD_HANDLERS=kts-vmm
  KTS_CTD_IMAGES_DIR="$IMAGES_DIR" KTS_PEERS_DIR="$PEERS_DIR" KTS_CTD_BRIDGE="$BRIDGE" KTS_CTD_SUBNET="$SUBNET")

# stop_pid <pidfile>: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  local pid i
  alive "$1" || return 0
  pid="$(cat "$1")"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

teardown() {
  local status=$? pod mount_point
  trap - EXIT INT TERM
  say "tearing down"
  env "${NODE_ENV[@]}" bash scripts/containerd-node.sh clean 2>&1 | sed 's/^/  /' || true
  if alive "$KTS_DIR/kts.pid"; then
    for pod in $(kts pods -q 2>/dev/null); do kts rm "$pod" >/dev/null 2>&1 || say "kts rm $pod failed"; done
  fi
  stop_pid "$KTS_DIR/kts.pid"
  stop_pid "$WORK/jaeger.pid"
  while read -r mount_point; do umount -l "$mount_point" 2>/dev/null || true; done < <(awk -v dir="$WORK/" 'index($5, dir) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" || true; fi
  if (( status != 0 )); then
    say "failed; last lines of the logs:"
    tail -n 5 "$WORK/jaeger.log" "$KTS_DIR/kts.log" "$NODE_DIR/containerd.log" 2>/dev/null | sed 's/^/  /' || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

free_ports() { node -e 'const net = require("net"); (async () => { const ports = []; for (let i = 0; i < Number(process.argv[1]); i++) ports.push(await new Promise((resolve) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); }); })); console.log(ports.join(" ")); })()' "$1"; }

# until_true <seconds> <what> <command...>: polls the command every 0.2 s.
until_true() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do (( SECONDS < deadline )) || die "$what did not happen within the deadline"; sleep 0.2; done
}

start_jaeger() {
  read -r OTLP_GRPC OTLP_HTTP QUERY_HTTP QUERY_GRPC < <(free_ports 4)
  # The same in-memory configuration as test/helpers/jaeger.ts.
  cat >"$WORK/jaeger.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: { receivers: [otlp], exporters: [jaeger_storage_exporter] }
  telemetry: { metrics: { level: none }, logs: { level: warn } }
extensions:
  jaeger_storage: { backends: { memstore: { memory: { max_traces: 1000 } } } }
  jaeger_query:
    enable_tracing: false
    storage: { traces: memstore }
    http: { endpoint: "127.0.0.1:$QUERY_HTTP" }
    grpc: { endpoint: "127.0.0.1:$QUERY_GRPC" }
receivers:
  otlp:
    protocols:
      grpc: { endpoint: "127.0.0.1:$OTLP_GRPC" }
      http: { endpoint: "127.0.0.1:$OTLP_HTTP" }
exporters:
  jaeger_storage_exporter: { trace_storage: memstore }
EOF
  setsid "$PEERS_BIN/jaeger" --config "$WORK/jaeger.yaml" >"$WORK/jaeger.log" 2>&1 </dev/null &
  echo $! >"$WORK/jaeger.pid"
  JAEGER="http://127.0.0.1:$QUERY_HTTP"
  until_true 30 "jaeger answering on $JAEGER" curl -fsS "$JAEGER/api/services"
  say "jaeger $(cat "$WORK/jaeger.pid"): OTLP/gRPC 127.0.0.1:$OTLP_GRPC, query $JAEGER"
}

start_kts() {
  mkdir -p "$KTS_DIR"
  printf '%s\n' "listen = \"$KTS_SOCK\"" "root = \"$KTS_DIR\"" '[runc]' "root = \"$KTS_DIR/runc\"" '[images]' "dir = \"$IMAGES_DIR\"" \
    '[hypervisor]' "guest_dir = \"$GUEST_DIR\"" 'accelerator = "auto"' 'boot_deadline_seconds = 120' >"$KTS_DIR/config.toml"
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_GRPC" OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_BSP_SCHEDULE_DELAY=100 \
    setsid node --max-semi-space-size=1 --v8-pool-size=1 "$REPO/bin/kts.js" daemon --config "$KTS_DIR/config.toml" >"$KTS_DIR/kts.log" 2>&1 </dev/null &
  echo $! >"$KTS_DIR/kts.pid"
  until_true 30 "the kts daemon serving" grep -q 'kts daemon serving' "$KTS_DIR/kts.log"
  say "kts daemon $(cat "$KTS_DIR/kts.pid") serving $KTS_SOCK"
}

start_node() {
  env "${NODE_ENV[@]}" OTEL_SERVICE_NAME=containerd OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_GRPC" \
    OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_INSECURE=true OTEL_BSP_SCHEDULE_DELAY=100 \
    bash scripts/containerd-node.sh up 2>&1 | sed 's/^/  /'
}

# run_pod: a VM pod through crictl with its own tracing on; sets POD_ID and TRACE_ID (the pod start's trace).
run_pod() {
  printf '%s' "{\"metadata\":{\"name\":\"traced-vm\",\"namespace\":\"docs\",\"uid\":\"uid-traced-vm\",\"attempt\":0},\"log_directory\":\"$NODE_DIR/logs\",\"linux\":{}}" >"$WORK/pod.json"
  POD_ID="$("$PEERS_BIN/crictl" --config "$NODE_DIR/crictl.yaml" --enable-tracing --tracing-endpoint "127.0.0.1:$OTLP_GRPC" \
    --tracing-sampling-rate-per-million 1000000 runp --runtime kts-vmm "$WORK/pod.json")"
  TRACE_ID="$(kts history --json "$POD_ID" | node -e 'const h = JSON.parse(require("fs").readFileSync(0, "utf8")); const e = h.events.find((event) => event.type === "SandboxStarted"); if (!e) process.exit(1); console.log(e.traceId)')" \
    || die "pod $POD_ID has no SandboxStarted event"
  say "pod $POD_ID started; its start is trace $TRACE_ID"
}

start_jaeger
start_kts
start_node
run_pod
node scripts/trace-picture.mjs --jaeger "$JAEGER" --trace "$TRACE_ID" --wait 60 \
  --title 'crictl runp --runtime kts-vmm: a VM pod from crictl through containerd and kts to the guest agent' \
  --out docs/vm-pod-trace.png --html docs/vm-pod-trace.html
[[ -z "${KTS_DOCS_TRACE_JSON:-}" ]] || curl -fsS "$JAEGER/api/traces/$TRACE_ID" >"$KTS_DOCS_TRACE_JSON"
kts timeline "$POD_ID" >docs/vm-pod-timeline.txt
cat docs/vm-pod-timeline.txt
"$PEERS_BIN/crictl" --config "$NODE_DIR/crictl.yaml" rmp -f "$POD_ID" >/dev/null
say "wrote docs/vm-pod-trace.png, docs/vm-pod-trace.html and docs/vm-pod-timeline.txt"
