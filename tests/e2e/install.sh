#!/usr/bin/env bash
# scripts/install.sh end to end, inside tests/kvmbox (root, a writable /etc over the
# host's): install into a fresh prefix, register with a dockerd and a containerd config of
# this run, `runv check`, `docker run --runtime runv` and `ctr run` with the installed
# runv and no RUNV_* variable anywhere, then --uninstall and check that nothing is left.
#
#   tests/kvmbox/kvmbox --env RUNTIME=/path/to/runv --env RUNV_KERNEL --env RUNV_INITRD \
#     -- tests/e2e/install.sh
#
# The binaries are RUNTIME's directory's (runv, runv-shim, runv-vmm, hyperctl), the guest
# kernel and initramfs RUNV_KERNEL and RUNV_INITRD: install.sh only copies them.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"
source "$here/bundle.sh"
ROOT=$(cd "$here/../.." && pwd)

RUNTIME=${RUNTIME:-}
[[ -x $RUNTIME && -f ${RUNV_KERNEL:-} && -f ${RUNV_INITRD:-} ]] ||
  { echo "install.sh: set RUNTIME, RUNV_KERNEL and RUNV_INITRD" >&2; exit 2; }
for b in /usr/sbin/dockerd /usr/bin/docker containerd ctr python3; do
  command -v "$b" >/dev/null || { echo "install.sh: $b is missing" >&2; exit 2; }
done
T=${RT_TIMEOUT:-120}
work=$(mktemp -d /tmp/runv-install.XXXXXX)
prefix=$work/prefix
export DOCKER_HOST=unix://$work/docker.sock DOCKER_CONFIG=$work/cli
sock=$work/containerd.sock
dockerd_pid="" containerd_pid=""
etc_existed=""
[[ -e /etc/runv ]] && etc_existed=1
cleanup() {
  local p m
  for p in $dockerd_pid $containerd_pid; do kill -TERM "$p" 2>/dev/null; done
  for p in $dockerd_pid $containerd_pid; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null
  done
  for p in $(pgrep -x runv-vmm; pgrep -x runv-shim); do kill -KILL "$p" 2>/dev/null; done
  awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  [[ -f $prefix/share/runv/install-manifest ]] &&
    "$ROOT/scripts/install.sh" --prefix "$prefix" --uninstall >/dev/null 2>&1
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# clean ARGS...: ARGS without any RUNV_* variable in the environment.
clean() {
  local unset=() v
  for v in $(compgen -e); do [[ $v == RUNV_* ]] && unset+=(-u "$v"); done
  env "${unset[@]}" "$@"
}
d() { timeout -k 5 "$T" docker "$@"; }

# ---- a dockerd and a containerd config of this run, with keys that must survive --------
echo '{"debug": false, "log-level": "warn"}' >"$work/daemon.json"
cp "$work/daemon.json" "$work/daemon.json.orig"
containerd_config "$work/containerd" "$sock" >"$work/containerd.toml"
cp "$work/containerd.toml" "$work/containerd.toml.orig"
clean /usr/sbin/dockerd --config-file "$work/daemon.json" --data-root "$work/data" \
  --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "$DOCKER_HOST" \
  --storage-driver vfs >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do
  d version >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || break
  sleep 0.2
done
check "dockerd (config file $work/daemon.json) is up" eval 'd version >/dev/null 2>&1'
# runtimes_have YES|NO: within 10 s, dockerd's runtimes list runv (YES) or not (NO): it
# reloads them on SIGHUP, asynchronously.
runtimes_have() {
  local i has
  for ((i = 0; i < 50; i++)); do
    has=NO
    d info 2>/dev/null | grep -q "Runtimes:.*runv" && has=YES
    [[ $has == "$1" ]] && return 0
    sleep 0.2
  done
  return 1
}

# ---- install ----------------------------------------------------------------------------
clean RUNV_BIN_DIR="$(dirname "$RUNTIME")" RUNV_KERNEL="$RUNV_KERNEL" RUNV_INITRD="$RUNV_INITRD" \
  "$ROOT/scripts/install.sh" --prefix "$prefix" --docker "$work/daemon.json" \
  --containerd "$work/containerd.toml" >"$work/install.out" 2>&1
check "install.sh --docker --containerd succeeds ($(tail -n 1 "$work/install.out"))" test $? = 0
again=$(clean RUNV_BIN_DIR="$(dirname "$RUNTIME")" RUNV_KERNEL="$RUNV_KERNEL" \
  RUNV_INITRD="$RUNV_INITRD" "$ROOT/scripts/install.sh" --prefix "$prefix" \
  --docker "$work/daemon.json" --containerd "$work/containerd.toml" 2>&1 >/dev/null; echo "rc=$?")
check "and again, idempotent ($again)" test "$again" = rc=0
check "the binaries, kernel and initramfs are in the prefix" bash -c \
  'for f in bin/runv bin/runv-shim bin/runv-vmm bin/hyperctl share/runv/vmlinux share/runv/runv-initrd.img; do [[ -f $1/$f ]] || exit 1; done' \
  _ "$prefix"
if [[ -z $etc_existed ]]; then
  check "/etc/runv/config.toml names them" grep -qx "kernel = \"$prefix/share/runv/vmlinux\"" /etc/runv/config.toml
fi
check "daemon.json: runv added, its other keys kept ($(tr -d ' \n' <"$work/daemon.json"))" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(not (c["runtimes"]["runv"]["path"] == sys.argv[2] + "/bin/runv" and c["log-level"] == "warn" and c["debug"] is False))' \
  "$work/daemon.json" "$prefix"
check "containerd.toml: a backup kept, the original's keys untouched" \
  cmp -s "$work/containerd.toml.runv-backup" "$work/containerd.toml.orig"
check "containerd reads runv's runtime from it (config dump)" bash -c \
  'containerd --config "$1" config dump 2>/dev/null | grep -qF "BinaryName = \"$2/bin/runv\""' _ "$work/containerd.toml" "$prefix"
out=$(clean "$prefix/bin/runv" --root "$work/state" check 2>&1)
check "the installed runv check passes with no RUNV_* variable ($(grep -v '^ok' <<<"$out" | tr '\n' ' '))" \
  eval '[[ $out == *"runv can run sandboxes here"* ]]'

# ---- Docker, registered by daemon.json and SIGHUP (never restarted) --------------------
check "dockerd took runv at SIGHUP, same pid $dockerd_pid" eval 'runtimes_have YES && kill -0 "$dockerd_pid"'
bundle_rootfs "$work/img" && tar -C "$work/img/rootfs" -c . | d import - runv-install:latest >/dev/null
out=$(d run --rm --runtime runv runv-install:latest sh -c 'echo from-$(uname -r)' 2>&1)
check "docker run --runtime runv with the installed files ($out)" eval '[[ $out == from-*runv* ]]'

# ---- containerd, through ctr and the runc shim with the installed runv -----------------
clean containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do
  [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1 && break
  sleep 0.2
done
ctr_() { timeout -k 5 "$T" ctr --address "$sock" --namespace runv-install "$@"; }
image=$("$here/../image/build.sh")
ref=$("$here/../image/build.sh" --ref)
ctr_ image import --snapshotter native "$image" >/dev/null 2>&1
out=$(ctr_ run --rm --snapshotter native --runtime io.containerd.runc.v2 \
  --runc-binary "$prefix/bin/runv" --runc-root "$work/runc-root" --fifo-dir "$work/fifo" \
  "$ref" runv-install sh -c 'echo from-$(uname -r)' 2>&1)
check "ctr run with the installed runv ($out)" eval '[[ $out == from-*runv* ]]'
kill -TERM "$containerd_pid" 2>/dev/null
wait "$containerd_pid" 2>/dev/null
containerd_pid=""

# ---- uninstall ----------------------------------------------------------------------------
"$ROOT/scripts/install.sh" --prefix "$prefix" --uninstall >"$work/uninstall.out" 2>&1
check "install.sh --uninstall succeeds ($(tail -n 1 "$work/uninstall.out"))" test $? = 0
check "the prefix, which install.sh made, is gone ($(find "$prefix" 2>&1 | head -n 5 | tr '\n' ' '))" \
  test ! -e "$prefix"
if [[ -z $etc_existed ]]; then
  check "/etc/runv is gone" test ! -e /etc/runv
fi
check "daemon.json is as before, with an empty runtimes that dockerd's reload applies" python3 -c '
import json, sys
now = json.load(open(sys.argv[1]))
sys.exit(now.pop("runtimes") != {} or now != json.load(open(sys.argv[2])))' \
  "$work/daemon.json" "$work/daemon.json.orig"
check "containerd.toml is as before, and its backup gone" bash -c \
  'cmp -s "$1" "$1.orig" && [[ ! -e $1.runv-backup ]]' _ "$work/containerd.toml"
check "dockerd dropped runv at SIGHUP, still the same pid" eval 'runtimes_have NO && kill -0 "$dockerd_pid"'
sleep 1
check "no runv-vmm or runv-shim left" test -z "$(pgrep -x runv-vmm; pgrep -x runv-shim)"
finish
