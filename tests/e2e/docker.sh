#!/usr/bin/env bash
# Docker drives a runtime: Debian's docker.io 20.10 (/usr/sbin/dockerd, /usr/bin/docker;
# /usr/local/bin/docker on the dev host is another CLI and is never used) with the runtime
# under test added as "runv". Generic over the runtime binary, so it is proven with runc.
#
# Usage: tests/e2e/docker.sh [RUNTIME]   (default: `command -v runv`)
# Environment: DOCKER_CASE_TIMEOUT (s, default 240) limits every docker command;
# RUNV_LEAK_PROCS (default "runv-vmm runv-shim") names helper processes that must be gone.
#
# The script starts its own dockerd with data root, exec root, pidfile and socket in a
# temporary directory, and every host-network knob off (--bridge=none --iptables=false
# --ip-masq=false --ip-forward=false --ip6tables=false), so the host's addresses, links,
# routes and forwarding sysctls must be the same afterwards (checked). Storage: overlay2 when
# the temporary directory's file system can hold its upper layers (tmpfs or ext4), vfs
# otherwise (overlayfs cannot be the upper layer of another overlay, e.g. kvmbox's root).
# The image is a `docker import` of a busybox rootfs made from the host's static
# /bin/busybox. Cases: exit status and output; run -d + exec + logs + stop (SIGTERM, and
# SIGKILL after -t) + rm; run -t through the console socket; the libnetwork-setkey prestart
# hook; then a leak check. An EXIT trap stops dockerd and removes everything.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

runtime=${1:-$(command -v runv)}
if [[ -z $runtime || ! -x $runtime ]]; then
  echo "docker.sh: runtime binary '${1:-runv}' not found or not executable" >&2
  exit 2
fi
for b in /usr/sbin/dockerd /usr/bin/docker /usr/bin/containerd /bin/busybox; do
  [[ -x $b ]] || { echo "docker.sh: $b missing (apt-get install docker.io busybox-static)" >&2; exit 2; }
done
limit=${DOCKER_CASE_TIMEOUT:-240}

net_config() {
  ip -o link | sed -E 's/ (qlen|link-netnsid) [0-9]+//g'
  ip -o addr
  ip route
  ip -6 route
  cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding
}

# Helper processes of the runtime under test that must not outlive the run (runv's VMM and
# shims); compared before and after, so other users' processes on the host do not count.
leak_procs=${RUNV_LEAK_PROCS:-runv-vmm runv-shim}
helper_pids() {
  local n
  for n in $leak_procs; do pgrep -x "$n"; done | sort -n
}
helpers_before=$(helper_pids)

work=$(mktemp -d "${TMPDIR:-/tmp}/runv-docker.XXXXXX")
net_before=$work/net.before
net_config >"$net_before"
export DOCKER_HOST=unix://$work/docker.sock DOCKER_CONFIG=$work/cli
dockerd_pid=""

# Processes started for this run: dockerd and whatever names the work dir (containerd,
# its shims, the runtime's helpers); found by PID, killed by PID.
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" || ${p#/proc/} == "$BASHPID" ]] && continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$work" && echo "${p#/proc/}"
  done
}
mounts_under() {
  awk -v w="$1" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r
}
stop_dockerd() {
  local i
  [[ -n $dockerd_pid ]] || return 0
  kill -TERM "$dockerd_pid" 2>/dev/null
  for ((i = 0; i < 300; i++)); do
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$dockerd_pid" 2>/dev/null
  wait "$dockerd_pid" 2>/dev/null
  dockerd_pid=""
}
cleanup() {
  local p m
  stop_dockerd
  for p in $(our_pids); do kill -KILL "$p" 2>/dev/null; done
  for m in $(mounts_under "$work"); do umount -l "$m" 2>/dev/null; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# d ARGS...: the Debian docker CLI against our daemon, time-limited.
d() { timeout -k 5 "$limit" /usr/bin/docker "$@"; }

start_dockerd() {
  local driver=$1 i
  mkdir -p "$work/data" "$work/exec"
  /usr/sbin/dockerd --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/dockerd.pid" -H "$DOCKER_HOST" --storage-driver "$driver" \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    --add-runtime "runv=$runtime" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for ((i = 0; i < 600; i++)); do
    kill -0 "$dockerd_pid" 2>/dev/null || break
    /usr/bin/docker version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  stop_dockerd
  return 1
}

fstype=$(stat -f -c %T "$work")
driver=vfs
[[ $fstype == tmpfs || $fstype == ext2/ext3 || $fstype == xfs ]] && driver=overlay2
if ! start_dockerd "$driver"; then
  if [[ $driver == overlay2 ]] && grep -q overlay "$work/dockerd.log"; then
    echo "# overlay2 refused on $fstype ($(grep -m1 -i overlay "$work/dockerd.log" | cut -c1-160)); trying vfs"
    rm -rf --one-file-system "$work/data" "$work/exec"
    driver=vfs
    start_dockerd vfs
  fi
fi
if [[ -z $dockerd_pid ]]; then
  not_ok "dockerd starts (storage driver $driver on $fstype)"
  show "$work/dockerd.log"
  finish
  exit 1
fi
ok "dockerd $(/usr/bin/docker version -f '{{.Server.Version}}') up: storage $driver on $fstype, runtime runv = $runtime"

# The image: a busybox rootfs made from the host's static busybox.
img=runv-test-busybox:latest
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
if tar -C "$rootfs" -c . | d import -c 'CMD ["/bin/sh"]' - "$img" >/dev/null 2>"$work/import.err"; then
  ok "docker import of a busybox rootfs as $img"
else
  not_ok "docker import of a busybox rootfs"; show "$work/import.err"; finish; exit 1
fi

# 1. Output and exit status.
out=$(d run --rm --runtime=runv "$img" sh -c 'echo hi; exit 5' 2>"$work/run1.err")
rc=$?
if [[ $out == hi && $rc -eq 5 ]]; then ok "docker run --rm: prints hi, exits 5"; else
  not_ok "docker run --rm: prints hi, exits 5 (got '$out', exit $rc)"; show "$work/run1.err"
fi

# 2. Detached: exec, logs, stop (TERM honoured / TERM ignored -> KILL after -t), rm.
cid=$(d run -d --runtime=runv --name runv-detached "$img" \
  sh -c 'trap "echo got-term; exit 7" TERM; echo started; while :; do sleep 0.2; done' 2>"$work/run2.err")
rc=$?
running=$(d inspect -f '{{.State.Running}}' runv-detached 2>/dev/null)
if [[ $rc -eq 0 && -n $cid && $running == true ]]; then ok "docker run -d: running"; else
  not_ok "docker run -d (exit $rc, running '$running')"; show "$work/run2.err"
fi
out=$(d exec runv-detached sh -c 'echo exec-out; exit 3' 2>"$work/exec.err")
rc=$?
if [[ $out == exec-out && $rc -eq 3 ]]; then ok "docker exec: output and exit 3"; else
  not_ok "docker exec: output and exit 3 (got '$out', exit $rc)"; show "$work/exec.err"
fi
for ((i = 0; i < 50; i++)); do d logs runv-detached 2>/dev/null | grep -q started && break; sleep 0.2; done
check "docker logs shows the container's output" bash -c '[[ $(timeout 60 /usr/bin/docker logs runv-detached 2>&1) == *started* ]]'
t0=$SECONDS
d stop -t 20 runv-detached >/dev/null 2>"$work/stop1.err"
rc=$? dt=$((SECONDS - t0))
code=$(d inspect -f '{{.State.ExitCode}}' runv-detached 2>/dev/null)
logs=$(d logs runv-detached 2>&1)
if [[ $rc -eq 0 && $code == 7 && $logs == *got-term* && $dt -lt 20 ]]; then
  ok "docker stop: SIGTERM reaches the container's trap (exit 7, ${dt} s)"
else
  not_ok "docker stop: SIGTERM reaches the trap (stop exit $rc, container exit '$code', ${dt} s, logs: $logs)"
  show "$work/stop1.err"
fi
check "docker rm" bash -c 'timeout 60 /usr/bin/docker rm runv-detached >/dev/null'

if d run -d --runtime=runv --name runv-stubborn "$img" sh -c 'trap "" TERM; while :; do sleep 0.2; done' >/dev/null 2>"$work/run3.err"; then
  ok "docker run -d of a container that ignores SIGTERM"
else
  not_ok "docker run -d of a container that ignores SIGTERM"; show "$work/run3.err"
fi
t0=$SECONDS
d stop -t 2 runv-stubborn >/dev/null 2>"$work/stop2.err"
rc=$? dt=$((SECONDS - t0))
code=$(d inspect -f '{{.State.ExitCode}}' runv-stubborn 2>/dev/null)
if [[ $rc -eq 0 && $code == 137 && $dt -ge 2 && $dt -lt 60 ]]; then
  ok "docker stop -t 2: TERM ignored, SIGKILL after the timeout (exit 137, ${dt} s)"
else
  not_ok "docker stop -t 2: SIGKILL after the timeout (stop exit $rc, container exit '$code', ${dt} s)"
  show "$work/stop2.err"
fi
check "docker rm of the killed container" bash -c 'timeout 60 /usr/bin/docker rm runv-stubborn >/dev/null'

# 3. A terminal: docker run -t under a pty (the runtime gets --console-socket).
cat >"$work/run-in-pty.py" <<'EOF'
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
EOF
out=$(timeout -k 5 "$limit" /usr/bin/python3 "$work/run-in-pty.py" /usr/bin/docker run -t --rm --runtime=runv "$img" \
  sh -c '[ -t 0 ] && [ -t 1 ] && echo "tty $(tty)"; exit 4' 2>"$work/tty.err")
rc=$?
if [[ $out == *"tty /dev/pts/"* && $rc -eq 4 ]]; then ok "docker run -t: a terminal inside, exit 4"; else
  not_ok "docker run -t: a terminal inside, exit 4 (got '${out//$'\r'/}', exit $rc)"; show "$work/tty.err"
fi

# 4. The libnetwork-setkey prestart hook: Docker adds it for a container with its own
# network namespace; it tells dockerd that namespace, and libnetwork bind-mounts it at the
# sandbox key. That file must be the network namespace of the container's host process
# (the init's PID Docker got from --pid-file), not the host's.
if d run -d --runtime=runv --network none --name runv-net "$img" sleep 600 >/dev/null 2>"$work/run4.err"; then
  key=$(d inspect -f '{{.NetworkSettings.SandboxKey}}' runv-net)
  pid=$(d inspect -f '{{.State.Pid}}' runv-net)
  hooked=$(d inspect -f '{{json .HostConfig.NetworkMode}}' runv-net)
  key_ns=$(stat -L -c %i "$key" 2>/dev/null)
  pid_ns=$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)
  host_ns=$(stat -L -c %i /proc/self/ns/net)
  if [[ -n $key_ns && $key_ns == "$pid_ns" && $key_ns != "$host_ns" ]] && mounts_under "$key" | grep -q .; then
    ok "libnetwork-setkey hook ran: sandbox key $key is the container's netns (inode $key_ns, host $host_ns, mode $hooked)"
  else
    not_ok "libnetwork-setkey hook: sandbox key '$key' netns '$key_ns', container pid $pid netns '$pid_ns', host '$host_ns'"
    grep -i setkey "$work/dockerd.log" | tail -n 5 | sed 's/^/#   /'
  fi
  check "docker rm -f of a running container" bash -c 'timeout 60 /usr/bin/docker rm -f runv-net >/dev/null'
else
  not_ok "docker run --network none"; show "$work/run4.err"
fi

# 5. Leak check: no containers, then dockerd stops cleanly and leaves nothing behind.
left=$(d ps -aq)
check "no containers left in docker ps -a" test -z "$left"
stop_dockerd
sleep 1
procs=$(our_pids | tr '\n' ' ')
if [[ -z ${procs// /} ]]; then ok "dockerd stopped; no process of this run left"; else
  not_ok "processes left after dockerd stopped: $procs"
  for p in $procs; do echo "#   $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-150)"; done
fi
new=$(comm -13 <(echo "$helpers_before") <(helper_pids) | tr '\n' ' ')
check "no $leak_procs process left (found: ${new:-none})" test -z "${new// /}"
mounts=$(mounts_under "$work" | tr '\n' ' ')
check "no mounts left under $work (found: ${mounts:-none})" test -z "${mounts// /}"
net_config >"$work/net.after"
if diff -u "$net_before" "$work/net.after" >"$work/net.diff"; then
  ok "host network config unchanged (links, addresses, routes, forwarding)"
else
  not_ok "host network config changed"; show "$work/net.diff"
fi
finish
