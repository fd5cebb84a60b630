#!/bin/sh
# virtio-blk test guest: /dev/vda is a read-write image, /dev/vdb a read-only one (see
# tests/e2e/blk.sh for the host side). Prints BLK-* lines, then powers off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for d in vda vdb; do
  echo "BLK-DEV $d serial=$(cat /sys/block/$d/serial 2>/dev/null) size=$(cat /sys/block/$d/size 2>/dev/null) ro=$(cat /sys/block/$d/ro 2>/dev/null)"
done
# The pattern the host wrote at byte 4096 of vda.
echo "BLK-READ $(dd if=/dev/vda bs=4096 skip=1 count=1 2>/dev/null | head -c 32)"
# A short write at byte 8192 and 1 MiB of 'Z' at 1 MiB, both flushed.
printf 'GUEST-WROTE-THIS' | dd of=/dev/vda bs=4096 seek=2 conv=notrunc,fsync 2>/dev/null
echo "BLK-WRITE-SHORT rc=$?"
head -c 1048576 /dev/zero | tr '\000' 'Z' | dd of=/dev/vda bs=65536 seek=16 conv=notrunc,fsync 2>/dev/null
echo "BLK-WRITE-1M rc=$?"
# The guest's own read-back of the 1 MiB, through the device (drop the page cache first).
echo 3 > /proc/sys/vm/drop_caches
echo "BLK-READBACK $(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | md5sum | cut -d' ' -f1)"
# DISCARD of 1 MiB at 4 MiB (the host filled it): the image gets a hole there.
blkdiscard -o 4194304 -l 1048576 /dev/vda
echo "BLK-DISCARD rc=$?"
# Writes to the read-only disk must fail.
printf 'MUST-NOT-LAND' | dd of=/dev/vdb bs=512 count=1 conv=notrunc,fsync 2>/dev/null
echo "BLK-RO-WRITE rc=$?"
echo "BLK-RO-READ $(dd if=/dev/vdb bs=512 count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
echo BLK-DONE
poweroff -f
sleep 5
