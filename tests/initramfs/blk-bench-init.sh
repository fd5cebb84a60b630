#!/bin/sh
# virtio-blk benchmark guest (tests/bench/blk.sh): sequential O_DIRECT read then write of
# /dev/vda in 1 MiB blocks; prints one BLK-BENCH line with the times, then powers off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mib=$(( $(cat /sys/block/vda/size) / 2048 ))
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
dd if=/dev/vda of=/dev/null bs=1M count=$mib iflag=direct 2>/dev/null
t1=$(now)
dd if=/dev/zero of=/dev/vda bs=1M count=$mib oflag=direct conv=fsync 2>/dev/null
t2=$(now)
echo "BLK-BENCH mib=$mib read_s=$(echo "$t1 $t0" | awk '{print $1 - $2}') write_s=$(echo "$t2 $t1" | awk '{print $1 - $2}')"
poweroff -f
sleep 5
