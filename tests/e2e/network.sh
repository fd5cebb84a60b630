#!/usr/bin/env bash
# Networking end to end: what a container gets from its engine, for runc first (it must
# pass: the cases are right) and then for runv. Run inside tests/kvmbox (root; the box has
# no network device, so nothing leaves it: every address used here belongs to a bridge,
# namespace or container this script made).
#
#   tests/kvmbox/kvmbox --env RUNTIME=/path/to/runv --env RUNV_KERNEL --env RUNV_INITRD \
#     -- tests/e2e/network.sh
#
# Cases, per runtime: Docker's default bridge (eth0 has Docker's address, MAC and MTU; the
# container fetches a page from a server on the bridge's gateway; `-p 127.0.0.1:P:80`
# serves the container's httpd to the box); `--network none` (lo works); `--network host`
# (the box's links, routes and qdiscs unchanged); a user-defined network where runv and
# runc containers reach each other by name (Docker's embedded DNS); `ctr run --cni` with
# a bridge CNI config (two containers ping each other); the runtime alone in a namespace
# with two veths, an IPv6 address and MTU 1400. Then a leak check: no runvtap link, no
# ingress qdisc, no runv-vmm or runv-shim, the box's network as before.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

RUNTIME=${RUNTIME:-$(command -v runv || true)}
[[ -n $RUNTIME && -x $RUNTIME ]] || { echo "network.sh: no runv binary: set RUNTIME" >&2; exit 2; }
RUNC=$(command -v runc) || { echo "network.sh: runc is missing" >&2; exit 2; }
for b in /usr/sbin/dockerd /usr/bin/docker containerd ctr ip tc /bin/busybox /usr/lib/cni/bridge; do
  command -v "$b" >/dev/null || { echo "network.sh: $b missing" >&2; exit 2; }
done
limit=${NET_CASE_TIMEOUT:-180}
work=$(mktemp -d /tmp/runv-net.XXXXXX)
export DOCKER_HOST=unix://$work/docker.sock DOCKER_CONFIG=$work/cli

# The box's own network, before and after.
net_config() {
  ip -o link | sed -E 's/ (qlen|link-netnsid) [0-9]+//g; s/[[:space:]]+/ /g; s/ \\/\\/g'
  ip -o addr
  ip route
  ip -6 route
  tc qdisc show
}
leak_procs="runv-vmm runv-shim"
helper_pids() {
  local n
  for n in $leak_procs; do pgrep -x "$n"; done | sort -n
}
helpers_before=$(helper_pids)
net_before=$(net_config)
# `ip netns add` makes /run/netns a mount point of its own the first time; the suite
# leaves the mount table as it found it.
netns_mounted_before=false
mountpoint -q /run/netns && netns_mounted_before=true

dockerd_pid='' containerd_pid='' httpd_pid=''
netnses=()
cleanup() {
  local p n
  [[ -n $httpd_pid ]] && kill "$httpd_pid" 2>/dev/null
  if [[ -n $dockerd_pid ]]; then
    timeout 20 /usr/bin/docker ps -aq 2>/dev/null | xargs -r timeout 60 /usr/bin/docker rm -f >/dev/null 2>&1
    timeout 20 /usr/bin/docker network rm runvnet >/dev/null 2>&1
    kill "$dockerd_pid" 2>/dev/null
    timeout 30 tail --pid="$dockerd_pid" -f /dev/null
    kill -9 "$dockerd_pid" 2>/dev/null
  fi
  if [[ -n $containerd_pid ]]; then
    kill "$containerd_pid" 2>/dev/null
    timeout 20 tail --pid="$containerd_pid" -f /dev/null
    kill -9 "$containerd_pid" 2>/dev/null
  fi
  pgrep -f -- "$work" | while read -r p; do kill -9 "$p" 2>/dev/null; done
  for n in "${netnses[@]}"; do ip netns del "$n" 2>/dev/null; done
  if ! $netns_mounted_before && mountpoint -q /run/netns && [[ -z $(ls -A /run/netns) ]]; then
    umount /run/netns
  fi
  awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

d() { timeout -k 5 "$limit" /usr/bin/docker "$@"; }
# An HTTP GET through busybox nc, whose last line is the page (busybox-static's wget
# crashes in its name service lookups where glibc's NSS modules do not fit it).
# get_cmd HOST PORT PATH: the shell command, for a container; box_get: in the box.
get_cmd() { echo "printf 'GET /$3 HTTP/1.0\r\n\r\n' | nc -w 5 $1 $2 | tail -n 1"; }
box_get() { sh -c "$(get_cmd "$@")" 2>/dev/null; }
# retry N CMD...: CMD until it succeeds, N times a second apart (a container's server
# may take a moment to listen).
retry() {
  local n=$1 i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" && return 0
    sleep 1
  done
  return 1
}

# ---- the image: static busybox and a page per runtime -------------------------------
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,www}
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
echo 'hello from a container' >"$rootfs/www/index.html"

# ---- dockerd with its default bridge and iptables ------------------------------------
mkdir -p "$work/data" "$work/exec"
/usr/sbin/dockerd --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
  -H "$DOCKER_HOST" --storage-driver vfs --add-runtime "runv=$RUNTIME" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
retry 120 /usr/bin/docker version >/dev/null 2>&1
if ! /usr/bin/docker version >/dev/null 2>&1; then
  not_ok "dockerd starts with its default bridge"; show "$work/dockerd.log"; finish; exit 1
fi
img=runv-net-busybox:latest
if tar -C "$rootfs" -c . | d import -c 'CMD ["/bin/sh"]' - "$img" >/dev/null 2>"$work/import.err"; then
  ok "dockerd $(/usr/bin/docker version -f '{{.Server.Version}}') with docker0 and iptables; image $img"
else
  not_ok "docker import"; show "$work/import.err"; finish; exit 1
fi
gw=$(ip -4 -o addr show docker0 | awk '{ split($4, a, "/"); print a[1] }')
mkdir -p "$work/gw"
echo "from the gateway" >"$work/gw/page.txt"
/bin/busybox httpd -f -p "$gw:18080" -h "$work/gw" &
httpd_pid=$!

port=18081
for rt in runc runv; do
  # Default bridge: address, MAC and MTU; a page from the gateway; a published port.
  name=web-$rt
  if d run -d --runtime=$rt --name "$name" -p "127.0.0.1:$port:80" "$img" httpd -f -p 80 -h /www \
    >/dev/null 2>"$work/$name.err"; then
    want="$(d inspect -f '{{.NetworkSettings.MacAddress}} {{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}' "$name")"
    got=$(d exec "$name" sh -c 'echo "$(cat /sys/class/net/eth0/address) $(ip -4 -o addr show eth0 | awk "{print \$4}")"' 2>&1)
    check "$rt, default bridge: eth0 has Docker's MAC and address ($want; saw $got)" test "$got" = "$want"
    mtu=$(d exec "$name" cat /sys/class/net/eth0/mtu 2>&1)
    check "$rt, default bridge: eth0's MTU is docker0's ($(cat /sys/class/net/docker0/mtu); saw $mtu)" \
      test "$mtu" = "$(cat /sys/class/net/docker0/mtu)"
    page=$(d exec "$name" sh -c "$(get_cmd "$gw" 18080 page.txt)" 2>&1)
    check "$rt, default bridge: the container fetches a page from the gateway $gw (got: $page)" \
      test "$page" = "from the gateway"
    if retry 30 bash -c '[[ $(printf "GET / HTTP/1.0\r\n\r\n" | busybox nc -w 3 127.0.0.1 "$1" | tail -n 1) == "hello from a container" ]]' _ "$port"; then
      ok "$rt, -p 127.0.0.1:$port:80: the container's httpd answers the box"
    else
      not_ok "$rt, -p 127.0.0.1:$port:80: the container's httpd answers the box"
    fi
    d rm -f "$name" >/dev/null 2>&1
  else
    not_ok "$rt, docker run -d -p on the default bridge"; show "$work/$name.err"
  fi
  port=$((port + 1))

  # --network none: only lo, and it works.
  out=$(d run --rm --runtime=$rt --network none "$img" \
    sh -c "httpd -p 127.0.0.1:80 -h /www && $(get_cmd 127.0.0.1 80 index.html) && ls /sys/class/net" 2>&1)
  check "$rt, --network none: lo is up and serves 127.0.0.1 (got: $(echo $out))" \
    test "$(echo $out)" = "hello from a container lo"

  # --network host: nothing of the box's network changes.
  before=$(net_config)
  out=$(d run --rm --runtime=$rt --network host "$img" sh -c 'echo ran' 2>&1)
  after=$(net_config)
  if [[ $out == ran && $before == "$after" ]]; then
    ok "$rt, --network host: runs and leaves the box's links, addresses, routes and qdiscs as they were"
  else
    not_ok "$rt, --network host: runs (output: $out) and leaves the box's network as it was"
    diff <(echo "$before") <(echo "$after") | sed 's/^/#   /'
  fi
done

# A user-defined network: containers reach each other by name through Docker's embedded
# DNS (127.0.0.11 in each container), runc with runc first, then runv with runc.
if d network create runvnet >/dev/null 2>"$work/netcreate.err"; then
  for c in runc:dns-runc runc:dns-runc2 runv:dns-runv; do
    rt=${c%%:*} name=${c#*:}
    d run -d --runtime="$rt" --network runvnet --name "$name" "$img" \
      sh -c "echo $name >/www/name.txt; exec httpd -f -p 80 -h /www" >/dev/null 2>"$work/$name.err" ||
      { not_ok "docker run -d $name on runvnet"; show "$work/$name.err"; }
  done
  for pair in dns-runc2:dns-runc dns-runv:dns-runc dns-runc:dns-runv; do
    from=${pair%%:*} to=${pair#*:}
    # nslookup asks the container's resolver itself (no NSS), then nc fetches the page.
    got=$(d exec "$from" sh -c "ip=\$(nslookup $to | awk '/^Address/ { a = \$NF } END { print a }'); $(get_cmd '$ip' 80 name.txt)" 2>&1 | tail -n 1)
    check "user-defined network: $from reaches $to by name (got: $got)" test "$got" = "$to"
  done
  resolv=$(d exec dns-runv cat /etc/resolv.conf 2>&1 | grep nameserver)
  check "user-defined network: the runv container's resolver is Docker's ($resolv)" \
    test "$resolv" = "nameserver 127.0.0.11"
  d rm -f dns-runc dns-runc2 dns-runv >/dev/null 2>&1
  d network rm runvnet >/dev/null 2>&1
else
  not_ok "docker network create"; show "$work/netcreate.err"
fi
kill "$dockerd_pid" 2>/dev/null
timeout 30 tail --pid="$dockerd_pid" -f /dev/null
dockerd_pid=''

# ---- ctr run --cni: a bridge CNI network, two containers ping each other ------------
mkdir -p /etc/cni/net.d /opt/cni
[[ -e /opt/cni/bin ]] || ln -s /usr/lib/cni /opt/cni/bin
cat >/etc/cni/net.d/10-runv-test.conflist <<'JSON'
{"cniVersion": "1.0.0", "name": "runv-test", "plugins": [
  {"type": "bridge", "bridge": "runvtest0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.7.0/24"}]]}}]}
JSON
sock=$work/containerd.sock
cat >"$work/containerd.toml" <<TOML
version = 2
root = "$work/ctrd-root"
state = "$work/ctrd-state"
[grpc]
  address = "$sock"
TOML
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
ctr_() { timeout -k 5 "$limit" ctr --address "$sock" --namespace runv-net "$@"; }
retry 60 ctr_ version >/dev/null 2>&1
# dockerd left the FORWARD policy at DROP with br_netfilter on: let the test bridge's own
# traffic through while it runs (removed below).
iptables -I FORWARD -i runvtest0 -o runvtest0 -j ACCEPT
if tests_image=$("$here/../image/build.sh" 2>"$work/image.err") &&
  ctr_ image import --base-name runv-test/busybox "$tests_image" >/dev/null 2>>"$work/image.err"; then
  ref=$(ctr_ image ls -q | head -n 1)
  for rt in runc runv; do
    bin=$RUNC
    [[ $rt == runv ]] && bin=$RUNTIME
    for n in 1 2; do
      ctr_ run -d --cni --runtime io.containerd.runc.v2 --runc-binary "$bin" "$ref" "cni-$rt-$n" \
        sh -c "mkdir -p /tmp/www && echo cni-$rt-$n >/tmp/www/name.txt && exec httpd -f -p 80 -h /tmp/www" \
        >/dev/null 2>"$work/cni-$rt-$n.err" || { not_ok "$rt: ctr run --cni cni-$rt-$n"; show "$work/cni-$rt-$n.err"; }
    done
    ips=()
    for n in 1 2; do
      ips+=("$(ctr_ task exec --exec-id "ip$n" "cni-$rt-$n" sh -c "ip -4 -o addr show eth0 | awk '{ split(\$4, a, \"/\"); print a[1] }'" 2>&1)")
    done
    for pair in 1:2 2:1; do
      from=${pair%%:*} to=${pair#*:}
      got=$(retry 10 ctr_ task exec --exec-id "get$from" "cni-$rt-$from" sh -c "$(get_cmd "${ips[to - 1]}" 80 name.txt)" 2>&1 | tail -n 1)
      check "$rt, ctr run --cni: cni-$rt-$from reaches cni-$rt-$to at ${ips[to - 1]} on the bridge network (got: $got)" \
        test "$got" = "cni-$rt-$to"
    done
    for n in 1 2; do
      ctr_ task kill -s SIGKILL "cni-$rt-$n" >/dev/null 2>&1
      timeout 30 bash -c "until ! ctr --address $sock --namespace runv-net task ls -q 2>/dev/null | grep -qx cni-$rt-$n || ctr --address $sock --namespace runv-net task delete cni-$rt-$n >/dev/null 2>&1; do sleep 0.5; done"
      ctr_ container delete "cni-$rt-$n" >/dev/null 2>&1
    done
  done
else
  not_ok "ctr image import for the CNI case"; show "$work/image.err"
fi
kill "$containerd_pid" 2>/dev/null
timeout 30 tail --pid="$containerd_pid" -f /dev/null
containerd_pid=''
iptables -D FORWARD -i runvtest0 -o runvtest0 -j ACCEPT

# ---- the runtime alone: a namespace with two veths, IPv6, MTU 1400 ------------------
ns=runv-net2-$$
netnses+=("$ns")
ip netns add "$ns"
ip link add n2a type veth peer name eth0 netns "$ns"
ip link add n2b type veth peer name eth1 netns "$ns"
ip addr add 10.77.1.1/24 dev n2a && ip link set n2a mtu 1400 up
ip addr add 10.77.2.1/24 dev n2b && ip link set n2b up
ip -n "$ns" link set eth0 mtu 1400 up
ip -n "$ns" link set eth1 up
ip -n "$ns" addr add 10.77.1.2/24 dev eth0
ip -n "$ns" addr add fd00:77::2/64 dev eth0 nodad
ip -n "$ns" addr add 10.77.2.2/24 dev eth1
ip -n "$ns" route add default via 10.77.1.1
mkdir -p "$work/peer"
echo reached-eth1-peer >"$work/peer/peer.txt"
/bin/busybox httpd -p 10.77.2.1:18090 -h "$work/peer"
bundle=$work/bundle2
mkdir -p "$bundle"
cp -a "$rootfs" "$bundle/rootfs"
"$RUNC" spec --bundle "$bundle"
python3 - "$bundle/config.json" "/run/netns/$ns" <<'PY'
import json, sys
path, netns = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c",
    "for i in eth0 eth1; do echo $i $(cat /sys/class/net/$i/mtu) $(ip -o addr show $i | awk '{print $4}' | grep -v ^fe80 | sort | tr '\\n' ' '); done;"
    " ip route | grep default; printf 'GET /peer.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.77.2.1 18090 | tail -n 1"]
for n in c["linux"]["namespaces"]:
    if n["type"] == "network":
        n["path"] = netns
json.dump(c, open(path, "w"))
PY
for rt in runc runv; do
  bin=$RUNC
  [[ $rt == runv ]] && bin=$RUNTIME
  out=$(timeout -k 5 "$limit" "$bin" --root "$work/root-$rt" run --bundle "$bundle" "two-$rt" 2>&1)
  flat=$(echo $out)
  check "$rt, two interfaces: eth0 MTU 1400 with 10.77.1.2/24 and fd00:77::2/64 ($flat)" \
    grep -q 'eth0 1400 10.77.1.2/24 fd00:77::2/64' <<<"$flat"
  check "$rt, two interfaces: eth1 with 10.77.2.2/24, default route via 10.77.1.1, eth1's peer reachable" \
    bash -c '[[ $1 == *"eth1 1500 10.77.2.2/24"*"default via 10.77.1.1"*reached-eth1-peer* ]]' _ "$flat"
  "$bin" --root "$work/root-$rt" delete -f "two-$rt" >/dev/null 2>&1
  check "$rt, after delete: no runvtap link and no ingress qdisc left in the namespace" \
    bash -c '! ip -n "$1" -o link | grep -q runvtap && [[ -z $(tc -n "$1" qdisc show ingress) ]]' _ "$ns"
done
pkill -f "httpd -p 10.77.2.1:18090"
ip link del n2a 2>/dev/null
ip link del n2b 2>/dev/null
ip netns del "$ns"

# ---- leak check ----------------------------------------------------------------------
sleep 1
new=$(comm -13 <(echo "$helpers_before") <(helper_pids) | tr '\n' ' ')
check "no $leak_procs process left (found: ${new:-none})" test -z "${new// /}"
check "no runvtap link and no ingress qdisc anywhere in the box" \
  bash -c '! ip -o link | grep -q runvtap && [[ -z $(tc qdisc show ingress) ]]'
# The bridges the engines made stay after they stop (as on any host); without them the
# box's network is what it was.
ip link del docker0 2>/dev/null
ip link del runvtest0 2>/dev/null
if diff <(echo "$net_before") <(net_config) >"$work/net.diff"; then
  ok "the box's links, addresses, routes and qdiscs are as before"
else
  not_ok "the box's network changed"; show "$work/net.diff"
fi
finish
