#!/usr/bin/env bash
# virtio-vsock benchmark (never part of the tests): throughput both ways and round-trip
# latency through runv-vmm's hybrid vsock, in one kvmbox run. QEMU's vhost-vsock is not
# compared: the box's kernel has no vhost_vsock module.
#   tests/bench/vsock.sh [RUNS] [MIB_PER_STREAM]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
cargo build --release -q -p runv-vmm
RUNV_GUEST_KERNEL=$(guest-kernel/build.sh | tail -n 1)
vsocktest=$(build_helper tests/initramfs/vsocktest.c)
RUNV_VSOCK_BENCH_INITRD=$(build_initramfs tests/initramfs/vsock-bench-init.sh vsock-bench \
  "$vsocktest:/bin/vsocktest")
export RUNV_GUEST_KERNEL RUNV_VSOCK_BENCH_INITRD
exec tests/kvmbox/kvmbox --env RUNV_VSOCK_BENCH_INITRD --timeout 1800 -- \
  /usr/bin/python3 tests/bench/vsock_inner.py "${1:-3}" "${2:-64}"
