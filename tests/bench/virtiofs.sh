#!/usr/bin/env bash
# virtio-fs benchmark (never part of the tests): sequential write/read MB/s and small-file
# create and stat rates, in the guest on a virtio-fs share, in the guest on its own tmpfs,
# and in the box on the directory the share serves (tmpfs), in one kvmbox run.
#   tests/bench/virtiofs.sh [RUNS] [MIB] [FILES]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
cargo build --release -q -p runv-vmm
RUNV_GUEST_KERNEL=$(guest-kernel/build.sh | tail -n 1)
RUNV_FSBENCH_INITRD=$(build_initramfs tests/initramfs/fsbench-init.sh fsbench \
  tests/initramfs/fsbench.sh:/bin/fsbench.sh)
export RUNV_GUEST_KERNEL RUNV_FSBENCH_INITRD
exec tests/kvmbox/kvmbox --env RUNV_FSBENCH_INITRD --timeout 1800 -- \
  bash tests/bench/virtiofs-inner.sh "${1:-3}" "${2:-256}" "${3:-2000}"
