#!/bin/sh
# The demo guest: greets from inside the micro-VM and powers it off.
mount -t proc proc /proc
echo "Hello from a runv micro-VM: Linux $(uname -r), $(nproc) vCPU(s), $(awk '/^MemTotal:/ {print $2 " " $3}' /proc/meminfo) of RAM."
poweroff -f
