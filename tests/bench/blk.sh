#!/usr/bin/env bash
# virtio-blk benchmark (never part of the tests): sequential O_DIRECT read and write of a
# raw image from the guest, runv-vmm against QEMU microvm (virtio-blk-device, default
# writeback cache like runv-vmm's page-cache I/O), alternating, in one kvmbox run.
#   tests/bench/blk.sh [RUNS] [IMAGE_MIB]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
cargo build --release -q -p runv-vmm
RUNV_GUEST_KERNEL=$(guest-kernel/build.sh | tail -n 1)
RUNV_BLK_BENCH_INITRD=$(build_initramfs tests/initramfs/blk-bench-init.sh blk-bench)
export RUNV_GUEST_KERNEL RUNV_BLK_BENCH_INITRD
exec tests/kvmbox/kvmbox --env RUNV_BLK_BENCH_INITRD --timeout 1800 -- \
  bash tests/bench/blk-inner.sh "${1:-3}" "${2:-128}"
