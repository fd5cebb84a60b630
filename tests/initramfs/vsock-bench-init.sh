#!/bin/sh
# vsock benchmark guest (tests/bench/vsock.sh): a sink on port 1234 (host to guest
# throughput), an echo server on 1236 (round trips), one guest-to-host stream of
# runv.vsock_bytes to host port 5000; powers off when the host connects to 1235.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
bytes=67108864
for arg in $(cat /proc/cmdline); do
  case $arg in runv.vsock_bytes=*) bytes=${arg#runv.vsock_bytes=} ;; esac
done
/bin/vsocktest sink 1234 &
/bin/vsocktest echo 1236 &
echo "VSOCK-G2H $(/bin/vsocktest source 5000 "$bytes")"
/bin/vsocktest wait 1235
poweroff -f
sleep 5
