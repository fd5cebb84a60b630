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
  RUNV_INITRD=$(build_initramfs --no-busybox "$(agent/build.sh)" agent)
  RUNV_BIN=$CARGO_TARGET_DIR/release/runv
  export RUNV_KERNEL RUNV_INITRD RUNV_BIN
  tests/kvmbox/kvmbox --timeout 1200 --env RUNV_KERNEL --env RUNV_INITRD \
    --env RUNV_BIN -- tests/bench/runtime.sh --inner "$@"
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

# median_ms RUNTIME ROOT: `RUNTIME --root ROOT run` of the bundle $runs times; prints the
# median wall time in ms. Each run's time goes to stderr as it comes; a run that fails
# or takes over 180 s stops the bench with its error.
n=0
median_ms() {
  local rt=$1 root=$2 i t0 t1 times=()
  for i in $(seq 1 "$runs"); do
    n=$((n + 1))
    t0=$(date +%s%N)
    if ! timeout -k 5 180 "$rt" --root "$root" run --bundle "$work/b" "bench$n" \
      >/dev/null 2>"$work/err" </dev/null; then
      echo "failed (run $i): $rt run: $(tail -n 5 "$work/err")" >&2
      "$rt" --root "$root" delete -f "bench$n" >/dev/null 2>&1
      return 1
    fi
    t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000000)))
    echo "# $(basename "$rt") run $i: ${times[-1]} ms" >&2
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

runv_ms=$(median_ms "$RUNV_BIN" "$work/runv-root")
runc_ms=$(median_ms "$(command -v runc)" "$work/runc-root")
echo "runv run true: median ${runv_ms} ms of $runs; runc run true: median ${runc_ms} ms"
awk -v a="$runv_ms" -v b="$runc_ms" 'BEGIN {printf "ratio runv/runc: %.1fx\n", a / b}'

# Memory of one idle sandbox (PSS from smaps, KiB): runv-vmm split into its guest RAM
# mapping (the anonymous mapping of exactly --memory MiB) and everything else, plus the
# shims.
bundle_make "$work/idle" -- sleep 600 >/dev/null
"$RUNV_BIN" --root "$work/runv-root" run --detach --bundle "$work/idle" idle </dev/null >/dev/null 2>&1
sleep 5
total=0
for p in $(pgrep -x runv-vmm); do
  mib=$(tr '\0' '\n' <"/proc/$p/cmdline" | awk 'prev == "--memory" { print; exit } { prev = $0 }')
  read -r other guest < <(awk -v g=$((mib * 1024)) '/^Size:/ { s = $2 }
    /^Pss:/ { if (s == g) guest += $2; else other += $2 } END { print other + 0, guest + 0 }' "/proc/$p/smaps")
  echo "runv-vmm (pid $p, --memory $mib): PSS outside guest RAM ${other} KiB, guest RAM touched ${guest} KiB"
  total=$((total + other + guest))
done
for p in $(pgrep -x runv-shim); do
  k=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup")
  echo "runv-shim (pid $p): PSS ${k} KiB"
  total=$((total + k))
done
echo "idle sandbox host PSS: ${total} KiB"
"$RUNV_BIN" --root "$work/runv-root" delete -f idle
