#!/usr/bin/env bash
# Inside kvmbox, for tests/bench/blk.sh: RUNS alternating runs of each VMM on an image of
# IMAGE_MIB MiB; prints each run and the median MB/s with the runv-vmm/QEMU ratio.
set -euo pipefail
runs=$1 mib=$2
cmdline=$(runv-vmm --print-cmdline)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img=$work/bench.img
truncate -s "${mib}M" "$img"
head -c "$((mib << 20))" /dev/urandom >"$img"
runv() {
  exec timeout 900 runv-vmm --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_BLK_BENCH_INITRD" --cmdline "$cmdline" \
    --memory 256 --block "path=$img"
}
qemu() {
  exec timeout 900 qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,isa-serial=on -accel kvm -cpu host \
    -smp 1 -m 256 -nodefaults -no-user-config -nographic -display none -serial stdio -no-reboot \
    -kernel "$RUNV_GUEST_KERNEL" -initrd "$RUNV_BLK_BENCH_INITRD" -append "$cmdline" \
    -drive "id=d0,file=$img,format=raw,if=none" -device virtio-blk-device,drive=d0
}
# result VMM: runs it until its BLK-BENCH line (QEMU microvm does not power off on the
# guest's request, so the VM is killed once the line is there); prints the line.
result() {
  local out=$work/$1.out pid i
  "$1" >"$out" 2>/dev/null &
  pid=$!
  for i in $(seq 9000); do
    grep -aq '^BLK-BENCH' "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  tr -d '\r' <"$out" | grep -a '^BLK-BENCH' || true
}
declare -A reads writes
for i in $(seq "$runs"); do
  for vmm in runv qemu; do
    line=$(result "$vmm")
    echo "run $i $vmm: ${line:-no result}"
    r=$(sed -n 's/.*read_s=\([0-9.]*\).*/\1/p' <<<"$line")
    w=$(sed -n 's/.*write_s=\([0-9.]*\).*/\1/p' <<<"$line")
    reads[$vmm]+="$r " writes[$vmm]+="$w "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "")}'; }
echo
printf '%-10s %14s %14s\n' VMM "read MB/s" "write MB/s"
declare -A rmb wmb
for vmm in runv qemu; do
  r=$(median <<<"${reads[$vmm]}") w=$(median <<<"${writes[$vmm]}")
  rmb[$vmm]=$(awk -v m="$mib" -v s="$r" 'BEGIN {if (s > 0) printf "%.1f", m * 1.048576 / s}')
  wmb[$vmm]=$(awk -v m="$mib" -v s="$w" 'BEGIN {if (s > 0) printf "%.1f", m * 1.048576 / s}')
  printf '%-10s %14s %14s\n' "$vmm" "${rmb[$vmm]:-?}" "${wmb[$vmm]:-?}"
done
awk -v a="${rmb[runv]:-0}" -v b="${rmb[qemu]:-0}" -v c="${wmb[runv]:-0}" -v d="${wmb[qemu]:-0}" \
  'BEGIN {if (b > 0 && d > 0) printf "ratio runv-vmm/qemu (median MB/s): read %.2fx, write %.2fx\n", a / b, c / d}'
