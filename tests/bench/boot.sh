#!/usr/bin/env bash
# Boot benchmark (never part of the tests): runv-vmm vs QEMU microvm in one kvmbox run.
#   tests/bench/boot.sh [--runs N]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$ROOT"
cargo build --release -q -p runv-vmm
RUNV_GUEST_KERNEL=$(guest-kernel/build.sh | tail -n 1)
RUNV_MARKER_INITRD=$(build_initramfs tests/initramfs/marker-init.sh marker)
export RUNV_GUEST_KERNEL RUNV_MARKER_INITRD
exec tests/kvmbox/kvmbox --env RUNV_MARKER_INITRD -- /usr/bin/python3 tests/bench/boot.py "$@"
