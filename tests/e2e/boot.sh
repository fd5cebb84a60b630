#!/usr/bin/env bash
# End-to-end boot tests of runv-vmm. Run inside tests/kvmbox (or on a host with hardware
# KVM): needs runv-vmm on PATH, RUNV_GUEST_KERNEL (guest-kernel/build.sh) and
# RUNV_MARKER_INITRD (tests/initramfs/build.sh tests/initramfs/marker-init.sh ...).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

: "${RUNV_GUEST_KERNEL:?set RUNV_GUEST_KERNEL to the guest vmlinux}"
: "${RUNV_MARKER_INITRD:?set RUNV_MARKER_INITRD to the marker initramfs}"
VM_TIMEOUT=${VM_TIMEOUT:-180}
CMDLINE=$(runv-vmm --print-cmdline)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# vm NAME ARGS...: runs runv-vmm (or $VMM), console to $work/NAME.out, stderr to $work/NAME.err,
# status to $work/NAME.rc.
vm() {
  local name=$1
  shift
  timeout "$VM_TIMEOUT" "${VMM:-runv-vmm}" "$@" >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.rc"
}
rc() { cat "$work/$1.rc"; }

# boot_case CPUS MIB: marker with the vCPU count and MemTotal asked for, exit 0.
boot_case() {
  local cpus=$1 mib=$2 name="boot-$1cpu"
  vm "$name" --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_MARKER_INITRD" \
    --cmdline "$CMDLINE" --cpus "$cpus" --memory "$mib"
  local line nproc mem_kb
  line=$(grep -a 'RUNV-MARKER' "$work/$name.out" | tail -n 1)
  nproc=$(sed -n 's/.*nproc=\([0-9]*\).*/\1/p' <<<"$line")
  mem_kb=$(sed -n 's/.*memtotal_kb=\([0-9]*\).*/\1/p' <<<"$line")
  if [[ $(rc "$name") == 0 && -n $line ]]; then ok "$cpus vCPU(s), $mib MiB: guest printed its marker and powered off (exit 0)"
  else not_ok "$cpus vCPU(s), $mib MiB: marker and exit 0 (exit $(rc "$name"))"; show "$work/$name.out" "$work/$name.err"; fi
  check "$cpus vCPU(s): guest sees nproc=$cpus (saw ${nproc:-nothing})" [ "${nproc:-0}" = "$cpus" ]
  # MemTotal excludes what the kernel reserves for itself: accept 80-100 % of the size.
  local asked_kb=$((mib * 1024))
  check "$mib MiB: guest MemTotal ${mem_kb:-?} kB is 80-100% of $asked_kb kB" \
    [ "${mem_kb:-0}" -le "$asked_kb" -a "${mem_kb:-0}" -ge $((asked_kb * 8 / 10)) ]
}

boot_case 1 256
boot_case 2 512

vm reboot --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE runv.test=reboot"
if [[ $(rc reboot) != 0 && $(rc reboot) != 124 ]] && grep -q "reset" "$work/reboot.err"; then
  ok "guest reboot: non-zero exit ($(rc reboot)) with \"$(tr -d '\n' <"$work/reboot.err")\""
else not_ok "guest reboot exits non-zero with a reset reason (exit $(rc reboot))"; show "$work/reboot.out" "$work/reboot.err"; fi

vm panic --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE runv.test=panic"
if [[ $(rc panic) != 0 && $(rc panic) != 124 ]] && grep -q "panic" "$work/panic.err"; then
  ok "guest kernel panic: non-zero exit ($(rc panic)) with \"$(tr -d '\n' <"$work/panic.err")\""
else not_ok "guest kernel panic exits non-zero with a panic reason (exit $(rc panic))"; show "$work/panic.out" "$work/panic.err"; fi

# A guest flooding its console: runv-vmm writes at most --console-limit bytes of it.
vm flood --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_MARKER_INITRD" \
  --cmdline "$CMDLINE runv.test=flood" --console "$work/flood.log" --console-limit 65536
size=$(stat -c %s "$work/flood.log" 2>/dev/null || echo 0)
check "a guest flooding its console (80 KiB): the console file stays within the 64 KiB limit and one notice ($size bytes)" \
  [ "$size" -ge 65536 -a "$size" -le $((65536 + 200)) ]
check "the console file ends with the limit's notice" \
  grep -q "the console reached its limit of 65536 bytes" "$work/flood.log"
check "the flooding guest still powered off normally (exit $(rc flood))" [ "$(rc flood)" = 0 ]

head -c 4194304 /dev/urandom >"$work/corrupt-vmlinux"
vm corrupt --kernel "$work/corrupt-vmlinux" --initrd "$RUNV_MARKER_INITRD"
if [[ $(rc corrupt) != 0 && $(rc corrupt) != 124 ]] && grep -q "corrupt-vmlinux" "$work/corrupt.err" \
  && [[ $(wc -l <"$work/corrupt.err") == 1 ]]; then
  ok "corrupt kernel image: one-line error naming it, exit $(rc corrupt): $(cat "$work/corrupt.err")"
else not_ok "corrupt kernel image gives a clear error and non-zero exit (exit $(rc corrupt))"; show "$work/corrupt.err"; fi

# A truncated copy of the real kernel: a valid ELF header whose segments are cut off.
head -c 1048576 "$RUNV_GUEST_KERNEL" >"$work/truncated-vmlinux"
vm truncated --kernel "$work/truncated-vmlinux"
if [[ $(rc truncated) != 0 && $(rc truncated) != 124 ]] && grep -q "truncated-vmlinux" "$work/truncated.err"; then
  ok "truncated kernel image: error naming it, exit $(rc truncated)"
else not_ok "truncated kernel image gives a clear error (exit $(rc truncated))"; show "$work/truncated.err"; fi

vm missing --kernel "$work/no-such-vmlinux"
if [[ $(rc missing) == 1 ]] && grep -q "no-such-vmlinux" "$work/missing.err"; then
  ok "missing kernel image: error naming it, exit 1"
else not_ok "missing kernel image (exit $(rc missing))"; show "$work/missing.err"; fi

# The jail (--jail): the same marker VM boots from inside it, console to a file the jail
# binds; a missing kernel is reported from inside the jail by name.
vm jailed --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE" \
  --console "$work/jailed.log" --jail
if [[ $(rc jailed) == 0 ]] && grep -aq 'RUNV-MARKER' "$work/jailed.log"; then
  ok "jailed: the guest printed its marker and powered off (exit 0)"
else not_ok "jailed boot (exit $(rc jailed))"; show "$work/jailed.log" "$work/jailed.err"; fi
# Relative paths, as a person types them: the jail binds them at their absolute paths.
(cd "$(dirname "$RUNV_GUEST_KERNEL")" && vm jailed-rel --kernel "$(basename "$RUNV_GUEST_KERNEL")" \
  --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE" --console "$work/jailed-rel.log" --jail)
check "jailed, a kernel given by a relative path: the guest boots (exit $(rc jailed-rel))" \
  bash -c '[[ $1 == 0 ]] && grep -aq RUNV-MARKER "$2"' _ "$(rc jailed-rel)" "$work/jailed-rel.log"
vm jailed-missing --kernel "$work/no-such-vmlinux" --jail
check "jailed, missing kernel: exit 1 naming it ($(tr -d '\n' <"$work/jailed-missing.err"))" \
  bash -c '[[ $1 == 1 ]] && grep -q no-such-vmlinux "$2"' _ "$(rc jailed-missing)" "$work/jailed-missing.err"

# The seccomp trap: a runv-vmm built with the test-only seccomp-selftest feature
# (RUNV_VMM_SELFTEST) makes the named thread call acct(2) once its filter is on; the VMM
# must exit 5 with a line naming the thread and the call (163 on x86_64). The release
# runv-vmm has no such hook: the same variable changes nothing there.
if [[ -n ${RUNV_VMM_SELFTEST:-} ]]; then
  for thread in vcpu devices main; do
    RUNV_VMM_SECCOMP_SELFTEST=$thread VMM=$RUNV_VMM_SELFTEST vm "trap-$thread" --kernel "$RUNV_GUEST_KERNEL" \
      --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE" --console off \
      --vsock "cid=3,uds=$work/trap-$thread.sock" --jail --seccomp trap
    check "seccomp: a forbidden call on the $thread thread ends the jailed VMM with status 5 ($(rc "trap-$thread"): $(tr -d '\n' <"$work/trap-$thread.err"))" \
      bash -c '[[ $1 == 5 ]] && grep -q "seccomp: thread $2 made forbidden system call 163; exiting with status 5" "$3"' \
      _ "$(rc "trap-$thread")" "$thread" "$work/trap-$thread.err"
  done
  RUNV_VMM_SECCOMP_SELFTEST=vcpu VMM=$RUNV_VMM_SELFTEST vm trap-off --kernel "$RUNV_GUEST_KERNEL" \
    --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE" --console off --seccomp off
  check "seccomp: with --seccomp off the same call is let through and the guest powers off (exit $(rc trap-off))" \
    [ "$(rc trap-off)" = 0 ]
  RUNV_VMM_SECCOMP_SELFTEST=vcpu vm trap-release --kernel "$RUNV_GUEST_KERNEL" \
    --initrd "$RUNV_MARKER_INITRD" --cmdline "$CMDLINE" --console off
  check "seccomp: the release runv-vmm has no selftest hook (exit $(rc trap-release))" [ "$(rc trap-release)" = 0 ]
else
  not_ok "RUNV_VMM_SELFTEST is not set: the seccomp trap was not tested"
fi

finish
