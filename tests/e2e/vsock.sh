#!/usr/bin/env bash
# End-to-end test of virtio-vsock (runv-vmm --vsock, hybrid vsock over Unix sockets). Run
# inside tests/kvmbox: needs runv-vmm on PATH (or RUNV_VMM), RUNV_GUEST_KERNEL and
# RUNV_VSOCK_INITRD (tests/initramfs/build.sh tests/initramfs/vsock-init.sh OUT
# vsocktest:/bin/vsocktest, with vsocktest built static from tests/initramfs/vsocktest.c).
# VSOCK_BYTES sets the size of the big stream each way (default 64 MiB; about 35 s for the
# whole suite in the box). The checks are in vsock_host.py.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${RUNV_GUEST_KERNEL:?set RUNV_GUEST_KERNEL to the guest vmlinux}"
: "${RUNV_VSOCK_INITRD:?set RUNV_VSOCK_INITRD to the vsock test initramfs}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$here/vsock_host.py" "$work"
