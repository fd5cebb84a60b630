#!/bin/sh
# fsbench.sh DIR LABEL MIB FILES: in DIR, a sequential write (conv=fsync) then read of MIB
# MiB in 1 MiB blocks, FILES empty-file creates, then `ls -l` of them (one lstat each);
# prints one FS-BENCH line with the seconds (nothing if a dd fails). Caches are dropped before the read and the
# listing. Run by the virtio-fs benchmark both in the guest and in the box (busybox sh).
d=$1 label=$2 mib=$3 files=$4
now() { cut -d' ' -f1 /proc/uptime; }
since() { echo "$2 $1" | awk '{printf "%.2f", $1 - $2}'; }
t0=$(now)
dd if=/dev/zero of="$d/big" bs=1M count="$mib" conv=fsync 2>/dev/null || exit 1
t1=$(now)
sync
echo 3 >/proc/sys/vm/drop_caches
t2=$(now)
dd if="$d/big" of=/dev/null bs=1M 2>/dev/null || exit 1
t3=$(now)
mkdir -p "$d/small"
i=0
while [ $i -lt "$files" ]; do
  : >"$d/small/f$i"
  i=$((i + 1))
done
t4=$(now)
echo 3 >/proc/sys/vm/drop_caches
t5=$(now)
ls -l "$d/small" >/dev/null
t6=$(now)
rm -rf "$d/big" "$d/small"
echo "FS-BENCH where=$label mib=$mib files=$files write_s=$(since "$t0" "$t1")" \
  "read_s=$(since "$t2" "$t3") create_s=$(since "$t3" "$t4") stat_s=$(since "$t5" "$t6")"
