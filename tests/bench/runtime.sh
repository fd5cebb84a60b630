#!/usr/bin/env bash
# Runtime benchmark (never part of the tests): in ONE kvmbox run, `runv run` of a busybox
# `true` container end to end vs `runc run` of the same bundle (median of N, ratio), and
# the host memory of an idle sandbox (PSS of runv-vmm plus its shims).
#   tests/bench/runtime.sh [--runs N]
set -euo pipefail
if [[ ${1:-} != --inner ]]; then
  source "$(dirname "$0")/../../scripts/lib.sh"
  cd "$ROOT"
  ensure_packages runc busybox-static jq
  cargo build --release -q -p runv-vmm -p runv-runtime
  RUNV_KERNEL=$(guest-kernel/build.sh | tail -n 1)
  RUNV_INITRD=$(build_initramfs "$(agent/build.sh)" agent)
  RUNV_BIN=$CARGO_TARGET_DIR/release/runv
  export RUNV_KERNEL RUNV_INITRD RUNV_BIN
  work=$(mktemp -d /tmp/runv-bench.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  "$ROOT/tests/kvmbox/kvmbox" --timeout 1200 --env RUNV_KERNEL --env RUNV_INITRD \
    --env RUNV_BIN -- "$ROOT/tests/bench/runtime.sh" --inner "$@"
  exit
fi
shift
runs=10
[[ ${1:-} == --runs ]] && runs=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../e2e/bundle.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundle_make "$work/b" -- true >/dev/null

# median_ms CMD...: runs CMD $runs times, prints the median wall time in ms.
median_ms() {
  local i t0 t1 times=()
  for i in $(seq 1 "$runs"); do
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 </dev/null || { echo "failed: $*" >&2; return 1; }
    t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

n=0
run_one() { # RUNTIME ROOT
  n=$((n + 1))
  "$1" --root "$2" run --bundle "$work/b" "bench$n"
  "$1" --root "$2" delete -f "bench$n" 2>/dev/null || true
}
# Interleaved, so both see the same box load.
runv_ms=$(median_ms run_one "$RUNV_BIN" "$work/runv-root")
runc_ms=$(median_ms run_one "$(command -v runc)" "$work/runc-root")
echo "runv run true: median ${runv_ms} ms of $runs; runc run true: median ${runc_ms} ms"
awk -v a="$runv_ms" -v b="$runc_ms" 'BEGIN {printf "ratio runv/runc: %.1fx\n", a / b}'

# Memory of one idle sandbox: PSS of runv-vmm and the shims (smaps_rollup), in KiB.
bundle_make "$work/idle" -- sleep 600 >/dev/null
"$RUNV_BIN" --root "$work/runv-root" run --detach --bundle "$work/idle" idle </dev/null >/dev/null 2>&1
sleep 2
pss=0
for p in $(pgrep -x runv-vmm) $(pgrep -x runv-shim); do
  k=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
  echo "pid $p ($(cat /proc/$p/comm)): PSS ${k} KiB"
  pss=$((pss + k))
done
mem=$("$RUNV_BIN" --root "$work/runv-root" state idle | jq -r '.annotations["io.runv.memory_mib"] // empty')
echo "idle sandbox host PSS: ${pss} KiB (guest RAM configured: ${mem:-default} MiB)"
"$RUNV_BIN" --root "$work/runv-root" delete -f idle
