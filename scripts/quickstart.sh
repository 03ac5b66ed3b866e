#!/usr/bin/env bash
# The README's first command: install everything, start the kts daemon, run a busybox pod,
# and show its output, its history from the event log, and where its trace is.
set -euo pipefail
cd "$(dirname "$0")/.."
# The pod below is runc: the wasm runner (a ~6 min first Rust build) is left for when wasm pods are wanted.
KTS_BUILD_WASM_RUNNER="${KTS_BUILD_WASM_RUNNER:-0}" bash scripts/setup.sh

KTS="$(pwd)/bin/kts.js"
ROOT="${KTS_ROOT:-/var/lib/kts}"
export KTS_SOCKET="${KTS_SOCKET:-/run/kts/kts.sock}"
LOG="$ROOT/daemon.log"
# The daemon log names pods, paths and errors: root only, like the rest of the state directory.
umask 077
mkdir -p "$ROOT"
touch "$LOG" && chmod 600 "$LOG"

if ! "$KTS" pods >/dev/null 2>&1; then
  echo "quickstart: starting kts daemon (log: $LOG)"
  nohup "$KTS" daemon --root "$ROOT" --listen "$KTS_SOCKET" >>"$LOG" 2>&1 &
  for _ in $(seq 1 100); do "$KTS" pods >/dev/null 2>&1 && break; sleep 0.1; done
fi

started=$(date +%s%N)
out="$("$KTS" run --json examples/pod.yaml examples/busybox.yaml)"
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
pod="$(node -p "JSON.parse(process.argv[1]).podId" "$out")"
container="$(node -p "JSON.parse(process.argv[1]).containerId" "$out")"
echo "quickstart: pod $pod and container $container running after ${elapsed_ms} ms"
sleep 1
echo; echo "== kts pods"; "$KTS" pods
echo; echo "== kts ps"; "$KTS" ps
echo; echo "== kts logs $container"; "$KTS" logs "$container"
echo; echo "== kts history $pod"; "$KTS" history "$pod"
echo; echo "== kts timeline $pod"; "$KTS" timeline "$pod"
trace="$("$KTS" history --json "$pod" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const h=JSON.parse(s);console.log(h.events.find(e=>e.traceId)?.traceId??"")})')"
echo
echo "Trace of the run: $trace"
if [[ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]]; then
  echo "  spans were exported to $OTEL_EXPORTER_OTLP_ENDPOINT; open it in Jaeger's search by trace id."
else
  echo "  set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. a local Jaeger's OTLP port) before starting the daemon to export spans."
fi
echo "History: $KTS history $pod    Timeline: $KTS timeline $pod    Events: $KTS events    Remove: $KTS rm $pod"
echo "A microVM pod: $KTS run --runtime vmm examples/pod.yaml examples/busybox.yaml"
echo "A wasm one: $KTS run --runtime wasm examples/pod.yaml examples/wasm-hello.yaml (first build its runner: bash scripts/build-native.sh, ~6 min once)"
echo "The daemon keeps running (pid file: none; stop it with: pkill -f 'kts.js daemon')."
