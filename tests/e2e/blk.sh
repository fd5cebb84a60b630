#!/usr/bin/env bash
# End-to-end virtio-blk tests of runv-vmm. Run inside tests/kvmbox: needs runv-vmm on PATH,
# RUNV_GUEST_KERNEL and RUNV_BLK_INITRD (tests/initramfs/build.sh tests/initramfs/blk-init.sh).
# The guest reads a pattern the host wrote, writes bytes the host then checks, and fails to
# write a read-only image, which must stay unchanged.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

: "${RUNV_GUEST_KERNEL:?set RUNV_GUEST_KERNEL to the guest vmlinux}"
: "${RUNV_BLK_INITRD:?set RUNV_BLK_INITRD to the virtio-blk test initramfs}"
VM_TIMEOUT=${VM_TIMEOUT:-180}
CMDLINE=$(runv-vmm --print-cmdline)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rw=$work/data.img ro=$work/base.img
truncate -s 8M "$rw"
printf 'HOST-PATTERN-0123456789abcdefXYZ' | dd of="$rw" bs=4096 seek=1 conv=notrunc 2>/dev/null
head -c 1048576 /dev/zero | tr '\000' '\245' | dd of="$rw" bs=1M seek=4 conv=notrunc 2>/dev/null
head -c 1048576 /dev/urandom >"$ro"
ro_sum=$(md5sum <"$ro" | cut -d' ' -f1)
ro_first=$(head -c 512 "$ro" | md5sum | cut -d' ' -f1)
# 26 bytes: the guest sees the first 20.
long_id=runv-blk-serial-0123456789

timeout "$VM_TIMEOUT" runv-vmm --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_BLK_INITRD" \
  --cmdline "$CMDLINE" --memory 256 \
  --block "path=$rw,id=$long_id" --block "path=$ro,ro" >"$work/out" 2>"$work/err"
rc=$?
line() { grep -a "^$1 " "$work/out" | tail -n 1 | tr -d '\r'; }

if [[ $rc == 0 ]] && grep -q BLK-DONE "$work/out"; then ok "guest with two virtio-blk disks ran its checks and powered off"
else not_ok "guest ran to BLK-DONE and exit 0 (exit $rc)"; show "$work/out" "$work/err"; fi
check "vda serial is the id truncated to 20 bytes, 16384 sectors, writable ($(line 'BLK-DEV vda'))" \
  [ "$(line 'BLK-DEV vda')" = "BLK-DEV vda serial=${long_id:0:20} size=16384 ro=0" ]
check "vdb serial defaults to the file name, 2048 sectors, read-only ($(line 'BLK-DEV vdb'))" \
  [ "$(line 'BLK-DEV vdb')" = "BLK-DEV vdb serial=base.img size=2048 ro=1" ]
check "guest read the pattern the host wrote at byte 4096 ($(line BLK-READ))" \
  [ "$(line BLK-READ)" = "BLK-READ HOST-PATTERN-0123456789abcdefXYZ" ]
check "guest writes succeeded ($(line BLK-WRITE-SHORT); $(line BLK-WRITE-1M))" \
  [ "$(line BLK-WRITE-SHORT)" = "BLK-WRITE-SHORT rc=0" -a "$(line BLK-WRITE-1M)" = "BLK-WRITE-1M rc=0" ]
check "host sees the guest's short write at byte 8192" \
  [ "$(dd if="$rw" bs=4096 skip=2 count=1 2>/dev/null | head -c 16)" = "GUEST-WROTE-THIS" ]
z_sum=$(head -c 1048576 /dev/zero | tr '\000' 'Z' | md5sum | cut -d' ' -f1)
check "host sees the guest's 1 MiB of Z at 1 MiB" \
  [ "$(dd if="$rw" bs=65536 skip=16 count=16 2>/dev/null | md5sum | cut -d' ' -f1)" = "$z_sum" ]
check "guest read back its 1 MiB through the device" [ "$(line BLK-READBACK)" = "BLK-READBACK $z_sum" ]
check "bytes around the guest's writes are untouched" \
  [ "$(dd if="$rw" bs=65536 skip=32 count=16 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]
check "guest discarded 1 MiB at 4 MiB ($(line BLK-DISCARD))" [ "$(line BLK-DISCARD)" = "BLK-DISCARD rc=0" ]
check "the discarded range reads as zeros on the host" \
  [ "$(dd if="$rw" bs=1M skip=4 count=1 2>/dev/null | tr -d '\000' | wc -c)" = 0 ]
check "the discard left a hole: the image holds less than 2 MiB of data blocks" \
  [ "$(du -k "$rw" | cut -f1)" -lt 2048 ]
check "write to the read-only disk failed in the guest ($(line BLK-RO-WRITE))" \
  [ -n "$(line BLK-RO-WRITE)" -a "$(line BLK-RO-WRITE)" != "BLK-RO-WRITE rc=0" ]
check "the read-only disk is readable from the guest" [ "$(line BLK-RO-READ)" = "BLK-RO-READ $ro_first" ]
check "the read-only image is unchanged on the host" [ "$(md5sum <"$ro" | cut -d' ' -f1)" = "$ro_sum" ]

# A missing image is a clear error before the guest starts.
timeout "$VM_TIMEOUT" runv-vmm --kernel "$RUNV_GUEST_KERNEL" --block "path=$work/nope.img" \
  >"$work/missing.out" 2>"$work/missing.err"
rc=$?
if [[ $rc == 1 ]] && grep -q "nope.img" "$work/missing.err"; then ok "missing block image: error naming it, exit 1"
else not_ok "missing block image (exit $rc)"; show "$work/missing.err"; fi

finish
