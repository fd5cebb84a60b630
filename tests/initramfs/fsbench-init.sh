#!/bin/sh
# virtio-fs benchmark guest (tests/bench/virtiofs.sh): runs /bin/fsbench.sh on the share
# "bench" and on a guest tmpfs; the sizes come from runv.mib= and runv.files= on the
# kernel command line. Then powers off.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mib=64 files=1000
for arg in $(cat /proc/cmdline); do
  case $arg in
    runv.mib=*) mib=${arg#runv.mib=} ;;
    runv.files=*) files=${arg#runv.files=} ;;
  esac
done
mkdir -p /mnt/fs /mnt/tmp
mount -t virtiofs bench /mnt/fs && sh /bin/fsbench.sh /mnt/fs virtiofs "$mib" "$files"
mount -t tmpfs tmpfs /mnt/tmp && sh /bin/fsbench.sh /mnt/tmp guest-tmpfs "$mib" "$files"
umount /mnt/fs
poweroff -f
sleep 5
