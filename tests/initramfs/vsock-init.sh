#!/bin/sh
# vsock test guest (see tests/e2e/vsock.sh for the host side). Serves guest port 1234
# (sink: read to EOF, answer the CRC), makes guest-initiated streams to host ports 5000
# (one big), 5001 (50 at once) and 5002 (a hog nobody reads), prints VSOCK-* lines, and
# powers off once the host connects to port 1235 and closes.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
bytes=67108864
for arg in $(cat /proc/cmdline); do
  case $arg in runv.vsock_bytes=*) bytes=${arg#runv.vsock_bytes=} ;; esac
done
/bin/vsocktest sink 1234 &
echo "VSOCK-G2H $(/bin/vsocktest source 5000 "$bytes")"
/bin/vsocktest hog 5002 268435456 >/tmp/hog &
(
  i=0
  while [ $i -lt 50 ]; do
    /bin/vsocktest source 5001 65536 >/tmp/par.$i &
    i=$((i + 1))
  done
  wait
)
good=0
i=0
while [ $i -lt 50 ]; do
  line=$(cat /tmp/par.$i)
  sent=${line%% got *}
  got=${line#* got }
  [ "$sent" = "sent $got" ] && good=$((good + 1))
  i=$((i + 1))
done
echo "VSOCK-G2H-PARALLEL good=$good"
echo VSOCK-WAITING
/bin/vsocktest wait 1235
echo "VSOCK-HOG-LAST $(tail -n 1 /tmp/hog)"
echo VSOCK-DONE
poweroff -f
sleep 5
