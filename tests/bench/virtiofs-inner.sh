#!/usr/bin/env bash
# Inside kvmbox, for tests/bench/virtiofs.sh: RUNS runs of tests/initramfs/fsbench.sh in the
# guest (virtio-fs share and guest tmpfs) and in the box (the share's own directory);
# prints each run and the medians: MB/s, creates/s, stats/s, and virtio-fs against the box.
set -euo pipefail
runs=$1 mib=$2 files=$3
here=$(cd "$(dirname "$0")" && pwd)
cmdline=$(runv-vmm --print-cmdline --cmdline-append "runv.mib=$mib runv.files=$files")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/share"
declare -A vals
record() { # record LINE: adds each key=value of an FS-BENCH line under its where=
  local line=$1 where kv
  where=$(sed -n 's/.*where=\([^ ]*\).*/\1/p' <<<"$line")
  for kv in $line; do
    case $kv in *_s=*) vals[$where.${kv%%=*}]+="${kv#*=} " ;; esac
  done
}
for i in $(seq "$runs"); do
  out=$(timeout 900 runv-vmm --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_FSBENCH_INITRD" \
    --cmdline "$cmdline" --memory $((mib * 2 + 256)) --fs "tag=bench,path=$work/share" 2>&1 |
    tr -d '\r' | grep -a '^FS-BENCH' || true)
  box=$(busybox sh "$here/../initramfs/fsbench.sh" "$work/share" box "$mib" "$files")
  while read -r line; do
    [[ -n $line ]] || continue
    echo "run $i: $line"
    record "$line"
  done <<<"$out"$'\n'"$box"
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "")}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN {if (s > 0) printf "%.0f", n / s; else print "?"}'; }
echo
printf '%-12s %12s %12s %12s %12s\n' where "write MB/s" "read MB/s" "creates/s" "stats/s"
declare -A res
mb=$(awk -v m="$mib" 'BEGIN {print m * 1.048576}')
for where in virtiofs guest-tmpfs box; do
  w=$(median <<<"${vals[$where.write_s]:-}") r=$(median <<<"${vals[$where.read_s]:-}")
  c=$(median <<<"${vals[$where.create_s]:-}") s=$(median <<<"${vals[$where.stat_s]:-}")
  res[$where.w]=$(rate "$mb" "$w") res[$where.r]=$(rate "$mb" "$r")
  res[$where.c]=$(rate "$files" "$c") res[$where.s]=$(rate "$files" "$s")
  printf '%-12s %12s %12s %12s %12s\n' "$where" "${res[$where.w]}" "${res[$where.r]}" "${res[$where.c]}" "${res[$where.s]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "?"}'; }
echo "virtio-fs / box fs (median): write $(ratio "${res[virtiofs.w]}" "${res[box.w]}")," \
  "read $(ratio "${res[virtiofs.r]}" "${res[box.r]}"), create $(ratio "${res[virtiofs.c]}" "${res[box.c]}")," \
  "stat $(ratio "${res[virtiofs.s]}" "${res[box.s]}")"
