#!/usr/bin/env bash
# Network benchmark (never part of the tests): TCP throughput both ways (iperf3) and 1-byte
# request/response round trips (tests/initramfs/netrr.c) between a guest and the gateway,
# for runv (the real runtime), QEMU microvm with its user-space virtio-net on a tap in the
# same tc-redirect plumbing, and runc (a plain network namespace, for information), in
# alternating rounds in ONE kvmbox run. Method: docs/benchmarks.md, "Network".
#   tests/bench/net.sh [--rounds N] [--secs S] [--rtts N] [--len BYTES] [--par N]
#                      [--subjects "runv qemu runc"] [--smp N]
# --smp is the box's vCPUs (default 1); the rest goes to tests/bench/net-inner.sh.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
args=() smp=1
while [[ $# -gt 0 ]]; do
  case $1 in
  --smp) smp=$2; shift 2 ;;
  *) args+=("$1"); shift ;;
  esac
done
ensure_packages iperf3 runc busybox-static qemu-system-x86 jq
cargo build --release -q -p runv-vmm -p runv-runtime
RUNV_KERNEL=$(guest-kernel/build.sh | tail -n 1)
RUNV_INITRD=$(build_initramfs --no-busybox "$(agent/build.sh)" agent)
RUNV_BIN=$CARGO_TARGET_DIR/release/runv
NETBENCH_NETRR=$(build_helper tests/initramfs/netrr.c)
# The QEMU guest's initramfs: busybox, iperf3 with the shared libraries it loads, netrr.
iperf3=$(command -v iperf3)
extra=("$iperf3:/bin/iperf3" "$NETBENCH_NETRR:/bin/netrr")
while read -r lib; do extra+=("$lib:$lib"); done < <(ldd "$iperf3" |
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
NETBENCH_INITRD=$(build_initramfs tests/initramfs/net-bench-init.sh net-bench "${extra[@]}")
export RUNV_KERNEL RUNV_INITRD RUNV_BIN NETBENCH_NETRR NETBENCH_INITRD
export RUNV_GUEST_KERNEL=$RUNV_KERNEL
exec tests/kvmbox/kvmbox --smp "$smp" --timeout 3600 --env RUNV_KERNEL --env RUNV_INITRD \
  --env RUNV_BIN --env NETBENCH_NETRR --env NETBENCH_INITRD -- \
  bash tests/bench/net-inner.sh "${args[@]}"
