#!/bin/sh
# Test guest init: prints one marker line with the vCPU count and MemTotal, then ends the
# VM the way the kernel command line asks (runv.test=poweroff|reboot|panic|idle|flood;
# flood writes 80 KiB to the console first, then powers off).
# RUNV-INIT, its first output, is the benchmark's first-userspace marker.
echo RUNV-INIT
mount -t proc proc /proc
mem=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "RUNV-MARKER nproc=$(nproc) memtotal_kb=$mem"
case " $(cat /proc/cmdline) " in
  *" runv.test=reboot "*) reboot -f ;;
  *" runv.test=panic "*) exit 1 ;;  # init exiting panics the kernel
  *" runv.test=idle "*) while :; do sleep 3600; done ;;
  *" runv.test=flood "*) yes RUNV-FLOOD-0123456789abcdef | head -c 81920; echo; poweroff -f ;;
  *) poweroff -f ;;
esac
sleep 5
