#!/usr/bin/env bash
# The main job on its embedded default: boots runv's guest kernel in a runv-vmm micro-VM
# with an init that greets and powers off. On a host whose /dev/kvm cannot run a stock
# guest (kvm_pvm), the VM runs inside tests/kvmbox instead.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_packages busybox-static cpio
echo "building runv-vmm..." >&2
cargo build --release -q -p runv-vmm
echo "building the guest kernel (cached after the first run)..." >&2
RUNV_GUEST_KERNEL=$(guest-kernel/build.sh | tail -n 1)
export RUNV_GUEST_KERNEL
initrd=$(build_initramfs tests/initramfs/greeting-init.sh greeting)
vmm=(runv-vmm --kernel "$RUNV_GUEST_KERNEL" --initrd "$initrd" --cpus 1 --memory 256)
if host_runs_stock_guests; then
  PATH=$CARGO_TARGET_DIR/release:$PATH exec "${vmm[@]}"
fi
echo "this host's /dev/kvm is kvm_pvm: running the micro-VM inside tests/kvmbox" >&2
exec tests/kvmbox/kvmbox -- "${vmm[@]}"
