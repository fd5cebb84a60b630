#!/usr/bin/env bash
# Inside kvmbox, for tests/bench/net.sh: the plumbing, ROUNDS alternating rounds of each
# subject, one line per measurement and the medians with the runv/QEMU ratios.
#   net-inner.sh [--rounds N] [--secs S] [--rtts N] [--len BYTES] [--par N]
#                [--subjects "runv qemu runc"]
# Plumbing: bridge br-bench 10.99.0.1/24 in the box (the gateway: iperf3 -s and netrr
# server listen there); per subject a namespace netbench-S with a veth (eth0, 10.99.0.1N/24,
# default route via the gateway) whose peer nb-S is on the bridge. For QEMU the namespace
# also gets runv's model by hand: a vnet_hdr tap and ingress qdiscs with match-all u32
# mirred-redirect filters both ways between eth0 and the tap; runv makes its own.
# Nothing leaves the box: every address is on this bridge.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=3 secs=5 rtts=2000 len='' par=1 subjects='runv qemu runc'
while [[ $# -gt 0 ]]; do
  case $1 in
  --rounds) rounds=$2 ;;
  --secs) secs=$2 ;;
  --rtts) rtts=$2 ;;
  --len) len=$2 ;;
  --par) par=$2 ;;
  --subjects) subjects=$2 ;;
  *) echo "net-inner.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
source "$here/../e2e/bundle.sh"
gw=10.99.0.1 mem=512 limit=$((3 * secs + 240))
work=$(mktemp -d /tmp/netbench.XXXXXX)
servers=()
cleanup() {
  local p s
  set +e # best effort: a failing step here must not become the script's status
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null; done
  for s in $subjects; do
    [[ $s == runv ]] && timeout 60 "$RUNV_BIN" --root "$work/root-runv" delete -f netbench >/dev/null 2>&1
    [[ $s == runc ]] && timeout 60 runc --root "$work/root-runc" delete -f netbench >/dev/null 2>&1
    ip netns del "netbench-$s" 2>/dev/null
    ip link del "nb-$s" 2>/dev/null
  done
  ip link del br-bench 2>/dev/null
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- plumbing -----------------------------------------------------------------------
# The box loads br_netfilter; no rule needs it here, and it would tax every subject.
for f in /proc/sys/net/bridge/bridge-nf-call-ip{,6}tables; do [[ -e $f ]] && echo 0 >"$f"; done
ip link add br-bench type bridge
ip addr add "$gw/24" dev br-bench
ip link set br-bench up
declare -A addr mac
n=10
for s in $subjects; do
  n=$((n + 1))
  ns=netbench-$s
  addr[$s]=10.99.0.$n/24
  ip netns add "$ns"
  ip link add "nb-$s" type veth peer name eth0 netns "$ns"
  ip link set "nb-$s" master br-bench up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "${addr[$s]}" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$gw"
  mac[$s]=$(ip netns exec "$ns" cat /sys/class/net/eth0/address)
  if [[ $s == qemu ]]; then
    # What runv does in its namespace (runtime-cli/src/network/mod.rs), with ip and tc.
    ip -n "$ns" tuntap add dev tap0 mode tap vnet_hdr
    ip -n "$ns" link set tap0 mtu "$(ip netns exec "$ns" cat /sys/class/net/eth0/mtu)" up
    for dev in eth0 tap0; do tc -n "$ns" qdisc add dev "$dev" ingress; done
    tc -n "$ns" filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 \
      action mirred egress redirect dev tap0
    tc -n "$ns" filter add dev tap0 parent ffff: protocol all u32 match u8 0 0 \
      action mirred egress redirect dev eth0
  fi
done

# ---- the containers' bundle (runv, runc): busybox, iperf3 and its libraries, netrr ------
rootfs=$work/rootfs
bundle_rootfs "$work"
iperf3=$(command -v iperf3)
cp "$iperf3" "$rootfs/bin/iperf3"
cp "$NETBENCH_NETRR" "$rootfs/bin/netrr"
cp "$here/../initramfs/net-bench-init.sh" "$rootfs/net-bench.sh"
while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done < <(ldd "$iperf3" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
for s in runv runc; do
  [[ " $subjects " == *" $s "* ]] || continue
  mkdir -p "$work/b-$s"
  patch=$(printf '{"root": {"path": "%s"}, "linux": {"namespaces": [{"type": "pid"},
    {"type": "network", "path": "/run/netns/netbench-%s"}, {"type": "ipc"}, {"type": "uts"},
    {"type": "mount"}]}, "annotations": {"io.runv.cpus": "1", "io.runv.memory_mib": "%s"}}' \
    "$rootfs" "$s" "$mem")
  bundle_config "$work/b-$s" --env "NETBENCH_GW=$gw" --env "NETBENCH_SECS=$secs" \
    --env "NETBENCH_RTTS=$rtts" --env "NETBENCH_LEN=$len" --env "NETBENCH_PAR=$par" \
    --patch "$patch" -- /bin/sh /net-bench.sh --container
done

# ---- the subjects ----------------------------------------------------------------------
cmdline="$(runv-vmm --print-cmdline) netbench.gw=$gw netbench.secs=$secs netbench.rtts=$rtts netbench.par=$par"
[[ -n $len ]] && cmdline+=" netbench.len=$len"
run_runv() {
  timeout -k 5 "$limit" "$RUNV_BIN" --root "$work/root-runv" run --bundle "$work/b-runv" netbench
}
run_runc() {
  timeout -k 5 "$limit" runc --root "$work/root-runc" run --bundle "$work/b-runc" netbench
}
run_qemu() {
  exec ip netns exec netbench-qemu timeout -k 5 "$limit" qemu-system-x86_64 \
    -M microvm,x-option-roms=off,rtc=off,isa-serial=on -accel kvm -cpu host -smp 1 -m "$mem" \
    -nodefaults -no-user-config -nographic -display none -serial stdio -no-reboot \
    -kernel "$RUNV_KERNEL" -initrd "$NETBENCH_INITRD" \
    -append "$cmdline netbench.addr=${addr[qemu]}" \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vnet_hdr=on,vhost=off \
    -device "virtio-net-device,netdev=n0,mac=${mac[qemu]}"
}
# sample S: the counters of subject S while it runs (its VMM's threads' CPU time, the
# namespace's links), for the analysis; the last sample of a run is printed with it.
declare -A vmm_comm=([runv]=runv-vmm [qemu]=qemu-system-x86)
sample() {
  local s=$1 p t c st
  if [[ -n ${vmm_comm[$s]:-} ]]; then
    # Gone (the run is over): keep the previous sample.
    p=$(pgrep -n -x "${vmm_comm[$s]}") || return 1
    for t in /proc/"$p"/task/*; do
      # utime + stime (fields 14 and 15; the comm may hold spaces), in 1/100 s.
      c=$(tr ' ' _ <"$t/comm") && st=$(sed 's/.*) //' "$t/stat") || return 1
      echo "thread $c: $(awk '{ print ($12 + $13) / 100 }' <<<"$st") s CPU"
    done
  fi
  ip -n "netbench-$s" -s -j link show | jq -r '.[] | select(.ifname != "lo") |
    "link \(.ifname): RX packets \(.stats64.rx.packets) bytes \(.stats64.rx.bytes) dropped \(.stats64.rx.dropped); TX packets \(.stats64.tx.packets) bytes \(.stats64.tx.bytes) dropped \(.stats64.tx.dropped)"'
}
# result S OUT: runs subject S with its output in OUT until its NETBENCH-RESULT line (QEMU
# microvm does not power off on the guest's request: it is killed once the line is there);
# prints the line.
result() {
  local s=$1 out=$2 pid i
  "run_$s" >"$out" 2>&1 </dev/null &
  pid=$!
  for ((i = 0; i < limit * 10; i++)); do
    if ((i % 10 == 5)); then
      sample "$s" >"$out.sample.tmp" 2>/dev/null && mv -f "$out.sample.tmp" "$out.sample"
    fi
    grep -aq '^NETBENCH-RESULT' "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  sample "$s" >"$out.sample.tmp" 2>/dev/null && mv -f "$out.sample.tmp" "$out.sample"
  if [[ $s == qemu ]]; then
    sleep 0.5
    kill "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  [[ $s == runv ]] && timeout 60 "$RUNV_BIN" --root "$work/root-runv" delete -f netbench >/dev/null 2>&1
  [[ $s == runc ]] && timeout 60 runc --root "$work/root-runc" delete -f netbench >/dev/null 2>&1
  tr -d '\r' <"$out" | grep -a '^NETBENCH-RESULT' | tail -n 1 || true
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

"$NETBENCH_NETRR" server "$gw" 7777 &
servers+=($!)
echo "# $rounds rounds; iperf3 -t $secs -O 1 -P $par${len:+ -l $len}; $rtts round trips; VMs 1 vCPU, $mem MiB"
declare -A vals
metrics='tx_mbps rx_mbps rtt_median_us rtt_mean_us'
for r in $(seq "$rounds"); do
  for s in $subjects; do
    iperf3 -s -B "$gw" >"$work/iperf3-s.log" 2>&1 &
    ipid=$!
    out=$work/$s-$r.out
    line=$(result "$s" "$out")
    kill "$ipid" 2>/dev/null
    wait "$ipid" 2>/dev/null || true
    if [[ -z $line ]]; then
      echo "round $r $s: no result; the end of its output:"
      tr -d '\r' <"$out" | tail -n 15 | sed 's/^/#   /'
      continue
    fi
    for m in $metrics; do vals[$s,$m]+="$(field "$m" "$line") "; done
    echo "round $r $s: guest->gw $(field tx_mbps "$line") Mbit/s, gw->guest $(field rx_mbps "$line") Mbit/s," \
      "round trip median $(field rtt_median_us "$line") us (mean $(field rtt_mean_us "$line"), min $(field rtt_min_us "$line"))"
    tr -d '\r' <"$out" | grep -a '^# iperf3' | sed 's/^/#   /' || true
    [[ -f $out.sample ]] && sed 's/^/#   /' "$out.sample"
  done
done

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
printf '%-6s %16s %16s %18s %16s\n' "" "guest->gw Mbit/s" "gw->guest Mbit/s" "RTT median us" "RTT mean us"
declare -A med
for s in $subjects; do
  for m in $metrics; do med[$s,$m]=$(median <<<"${vals[$s,$m]:-}"); done
  printf '%-6s %16s %16s %18s %16s\n' "$s" "${med[$s,tx_mbps]:--}" "${med[$s,rx_mbps]:--}" \
    "${med[$s,rtt_median_us]:--}" "${med[$s,rtt_mean_us]:--}"
done
if [[ " $subjects " == *" runv "* && " $subjects " == *" qemu "* ]]; then
  ratio() { awk -v a="${med[runv,$1]:-}" -v b="${med[qemu,$1]:-}" 'BEGIN {if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-"}'; }
  echo "ratio runv/qemu (medians of $rounds): guest->gw $(ratio tx_mbps), gw->guest $(ratio rx_mbps)" \
    "(goal >= 0.8x); round trip median $(ratio rtt_median_us), mean $(ratio rtt_mean_us) (goal <= 1.25x)"
fi
