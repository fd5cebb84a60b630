#!/usr/bin/env bash
# End-to-end test of virtio-fs (runv-vmm --fs). Run inside tests/kvmbox (or on a host with
# hardware KVM): needs runv-vmm on PATH, RUNV_GUEST_KERNEL and RUNV_VIRTIOFS_INITRD
# (tests/initramfs/build.sh tests/initramfs/virtiofs-init.sh OUT fstest:/bin/fstest, with
# fstest built from tests/initramfs/fstest.c). The guest's checks are in virtiofs-init.sh;
# this side prepares the shares, edits a file while the guest runs, and checks afterwards
# what the guest wrote.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

: "${RUNV_GUEST_KERNEL:?set RUNV_GUEST_KERNEL to the guest vmlinux}"
: "${RUNV_VIRTIOFS_INITRD:?set RUNV_VIRTIOFS_INITRD to the virtio-fs test initramfs}"
VM_TIMEOUT=${VM_TIMEOUT:-300}
CMDLINE=$(runv-vmm --print-cmdline)
work=$(mktemp -d)
editor=
trap '[[ -n $editor ]] && kill "$editor" 2>/dev/null; rm -rf "$work"' EXIT

share=$work/share ro=$work/ro secret=$work/secret
mkdir -p "$share" "$ro" "$secret"
echo "written by the host" >"$share/host.txt"
echo "a-content" >"$share/a.txt"
echo "old" >"$share/edit.txt"
echo "host secret" >"$secret/secret.txt"
ln -s "$secret/secret.txt" "$share/escape"
ln -s ../secret/secret.txt "$share/rel"
ln -s ../../../../../../../.. "$share/up"
echo "read-only data" >"$ro/host.txt"

# The host-side edit: when the guest asks, rewrite edit.txt in place, then say so.
(
  for _ in $(seq 1 $((VM_TIMEOUT * 20))); do
    if [[ -e $share/edit-request ]]; then
      echo "edited on the host, longer" >"$share/edit.txt"
      touch "$share/edit-done"
      exit 0
    fi
    sleep 0.05
  done
) &
editor=$!

timeout "$VM_TIMEOUT" runv-vmm --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_VIRTIOFS_INITRD" \
  --cmdline "$CMDLINE" --memory 256 \
  --fs "tag=rw,path=$share" --fs "tag=ro,path=$ro,ro" >"$work/fs.out" 2>"$work/fs.err"
rc=$?

if [[ $rc == 0 ]] && grep -qa 'RUNV-FS done' "$work/fs.out"; then
  ok "guest with two virtio-fs shares ran its checks and powered off (exit 0)"
else
  not_ok "guest with two virtio-fs shares ran its checks and powered off (exit $rc)"
  show "$work/fs.out" "$work/fs.err"
fi
# One test line per guest check.
mapfile -t lines < <(grep -a '^RUNV-FS \(ok\|FAIL\) ' "$work/fs.out" | tr -d '\r')
for line in "${lines[@]}"; do
  case $line in
    "RUNV-FS ok "*) ok "guest: ${line#RUNV-FS ok }" ;;
    *) not_ok "guest: ${line#RUNV-FS FAIL }" ;;
  esac
done
check "guest reported its checks (saw ${#lines[@]})" [ "${#lines[@]}" -ge 30 ]

check "host reads the file the guest wrote" [ "$(cat "$share/guest.txt" 2>/dev/null)" = "written by the guest" ]
check "host sees the rename" [ -f "$share/b.txt" -a ! -e "$share/a.txt" ]
check "host sees the hard link (same inode)" [ "$share/b.txt" -ef "$share/hard.txt" ]
check "host sees the symlink as a link to b.txt" [ "$(readlink "$share/soft")" = b.txt ]
check "host sees mode 640" [ "$(stat -c %a "$share/b.txt" 2>/dev/null)" = 640 ]
check "host sees owner 1234:5678" [ "$(stat -c %u:%g "$share/b.txt" 2>/dev/null)" = 1234:5678 ]
xattr=$(/usr/bin/python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "trusted.runv").decode())' \
  "$share/b.txt" 2>&1)
check "host sees the xattr trusted.runv=yes (saw $xattr)" [ "$xattr" = yes ]
check "host sees the bytes written through the shared mmap" [ "$(head -c 7 "$share/mapped" 2>/dev/null)" = mmap-ok ]
check "read-only share unchanged" [ "$(ls "$ro")" = host.txt -a "$(cat "$ro/host.txt")" = "read-only data" ]
check "secret outside the share untouched" [ "$(cat "$secret/secret.txt")" = "host secret" ]

finish
