#!/bin/sh
# Network benchmark client (tests/bench/net.sh), run in two ways:
#  - as /init of a VM's initramfs (QEMU microvm): mounts, configures eth0 from the kernel
#    command line words netbench.addr=A/LEN and netbench.gw=GW, measures, powers off;
#  - as a container's process with the argument --container (runv, runc; it is PID 1 of
#    its namespace there too): the runtime gave it eth0; the parameters come from the
#    environment (NETBENCH_GW, NETBENCH_SECS, NETBENCH_RTTS, NETBENCH_LEN, NETBENCH_PAR).
# Measures against the gateway GW: TCP throughput guest -> GW (iperf3 -c) and GW -> guest
# (iperf3 -c -R), then NETBENCH_RTTS 1-byte round trips (netrr client, port 7777).
# Prints the iperf3 summary lines and one line
#   NETBENCH-RESULT tx_mbps=.. rx_mbps=.. rtt_median_us=.. rtt_mean_us=.. rtt_min_us=.. n=..
# (a figure the guest could not measure is "-").
gw=${NETBENCH_GW:-10.99.0.1} secs=${NETBENCH_SECS:-5} rtts=${NETBENCH_RTTS:-2000}
len=${NETBENCH_LEN:-} par=${NETBENCH_PAR:-1} addr='' vm=''
[ "${1:-}" = --container ] || vm=1
if [ -n "$vm" ]; then
  mount -t proc proc /proc
  mount -t sysfs sys /sys
  mount -t devtmpfs dev /dev
  for arg in $(cat /proc/cmdline); do
    case $arg in
    netbench.addr=*) addr=${arg#*=} ;;
    netbench.gw=*) gw=${arg#*=} ;;
    netbench.secs=*) secs=${arg#*=} ;;
    netbench.rtts=*) rtts=${arg#*=} ;;
    netbench.len=*) len=${arg#*=} ;;
    netbench.par=*) par=${arg#*=} ;;
    esac
  done
  ip link set lo up
  ip addr add "$addr" dev eth0
  ip link set eth0 up
  ip route add default via "$gw"
fi
export PATH=/bin:/sbin:/usr/bin
lenopt=
[ -n "$len" ] && lenopt="-l $len"
# iperf_mbps ARGS...: one bounded iperf3 run; prints the receiver's Mbit/s (the [SUM] line
# with -P), or "-".
# Also prints (stderr) the frames eth0 counted each way during the run and their mean size
# (a TSO/GSO frame counts once), and the sender's line (retransmits).
stats() { cat /sys/class/net/eth0/statistics/tx_packets /sys/class/net/eth0/statistics/tx_bytes \
  /sys/class/net/eth0/statistics/rx_packets /sys/class/net/eth0/statistics/rx_bytes | tr '\n' ' '; }
# counters WHAT: (stderr) the guest's cumulative eth0 error counters (a merged rx frame
# whose later buffers are not in the used ring yet counts as an rx_length_error in Linux's
# virtio-net) and TCP's retransmission, out-of-order and duplicate-data counters.
counters() {
  d=/sys/class/net/eth0/statistics
  echo "# iperf3 $*: eth0 rx_errors $(cat $d/rx_errors) rx_length_errors $(cat $d/rx_length_errors)" \
    "rx_dropped $(cat $d/rx_dropped) tx_errors $(cat $d/tx_errors) tx_dropped $(cat $d/tx_dropped);" \
    "$(awk '/^Tcp:/ { if (!hs) { hs = split($0, h); next } for (i = 2; i <= NF; i++) if (h[i] == "RetransSegs") r = $i }
      /^TcpExt:/ { if (!xs) { xs = split($0, x); next } for (i = 2; i <= NF; i++) if (x[i] ~ /^(TCPOFOQueue|TCPDSACKOldSent|TCPSACKReorder|TCPTimeouts)$/) e = e " " x[i] " " $i }
      END { print "RetransSegs " r e }' /proc/net/snmp /proc/net/netstat)" >&2
}
iperf_mbps() {
  s0=$(stats)
  # shellcheck disable=SC2086 # $lenopt is empty or two words
  out=$(timeout $((secs + 40)) iperf3 -c "$gw" -t "$secs" -O 1 -P "$par" $lenopt -f m "$@" 2>&1)
  s1=$(stats)
  line=$(echo "$out" | grep receiver | tail -n 1)
  echo "# iperf3 $*: ${line:-$(echo "$out" | tail -n 2 | tr '\n' ' ')}" >&2
  echo "# iperf3 $*: $(echo "$out" | grep sender | tail -n 1)" >&2
  echo "$s0 $s1" | awk '{ tp = $5 - $1; tb = $6 - $2; rp = $7 - $3; rb = $8 - $4
    printf "# iperf3 frames: tx %d (mean %d B), rx %d (mean %d B)\n", tp, tp ? tb / tp : 0, rp, rp ? rb / rp : 0 }' >&2
  counters "$@"
  mbps=$(echo "$line" | awk '{ for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }')
  echo "${mbps:--}"
}
# Wait for the gateway (the guest's link may take a moment): one round trip, with netrr's
# own connect retries (10 s; ping would need CAP_NET_RAW in the containers).
timeout 30 netrr client "$gw" 7777 1 >/dev/null 2>&1
tx=$(iperf_mbps)
rx=$(iperf_mbps -R)
rr=$(timeout 150 netrr client "$gw" 7777 "$rtts")
echo "NETBENCH-RESULT tx_mbps=$tx rx_mbps=$rx ${rr:-rtt_median_us=- rtt_mean_us=- rtt_min_us=- n=0}"
if [ -n "$vm" ]; then
  poweroff -f
  sleep 5
fi
