#!/usr/bin/env bash
# The main job on its embedded default: `hyperctl run` of a busybox image (built offline
# from the host's busybox-static) that greets from inside its own runv micro-VM. On a host
# whose /dev/kvm cannot run a stock guest (kvm_pvm), it runs inside tests/kvmbox instead.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_packages busybox-static cpio python3 file
echo "building runv, runv-shim, runv-vmm and hyperctl..." >&2
cargo build --release -q -p runv-vmm -p runv-runtime -p runv-hyperctl
echo "building the guest kernel and the agent initramfs (cached after the first run)..." >&2
RUNV_KERNEL=$(guest-kernel/build.sh | tail -n 1)
RUNV_INITRD=$(build_initramfs --no-busybox "$(agent/build.sh)" agent)
image=$(tests/image/build.sh)
export RUNV_KERNEL RUNV_INITRD
run=("$CARGO_TARGET_DIR/release/hyperctl" --root "${HYPERCTL_ROOT:-/var/lib/hyperctl}"
  run --rm "$image" echo "Hello from a container in its own runv micro-VM")
if host_runs_stock_guests; then
  exec "${run[@]}"
fi
echo "this host's /dev/kvm is kvm_pvm: running inside tests/kvmbox" >&2
work=$(mktemp -d /tmp/runv-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
tests_kvmbox=$ROOT/tests/kvmbox/kvmbox
"$tests_kvmbox" --env RUNV_KERNEL --env RUNV_INITRD -- "${run[@]}"
