#!/usr/bin/env bash
# The host side of runv's VM boundary, tried as an attacker would (docs/security.md).
# runv only: these are runv's own host paths and streams. Inside tests/kvmbox (root):
#
#   tests/kvmbox/kvmbox --env RUNTIME=/path/to/runv --env RUNV_KERNEL --env RUNV_INITRD \
#     --env RUNV_VSOCKTEST=$(build_helper tests/initramfs/vsocktest.c) -- tests/e2e/security.sh
#
# Cases: a container that makes a setuid-root binary and a device node in its rootfs,
# while an unprivileged host user tries to reach them through runv's state directory
# and root tries to open the node through the share; a container writing into a submount
# of a read-only rbind volume; a container (no seccomp profile, so AF_VSOCK is open to
# it) that keeps connecting to the stdio ports of the next exec while the test execs
# into it: the exec's stdio must arrive whole and nothing of it reach the attacker; a
# container that fills host memory through its tmpfs-backed rootfs ends at its host
# cgroup's limit; a Docker-style spec with an AppArmor profile runs. Then nothing of
# runv is left.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"
source "$here/bundle.sh"

RUNTIME=${RUNTIME:-$(command -v runv || true)}
[[ -n $RUNTIME && -x $RUNTIME ]] || { echo "security.sh: no runv binary: set RUNTIME" >&2; exit 2; }
[[ -n ${RUNV_VSOCKTEST:-} && -x ${RUNV_VSOCKTEST:-} ]] ||
  { echo "security.sh: set RUNV_VSOCKTEST (build_helper tests/initramfs/vsocktest.c)" >&2; exit 2; }
for tool in setpriv jq; do
  command -v "$tool" >/dev/null || { echo "security.sh: $tool is missing" >&2; exit 2; }
done
T=${RT_TIMEOUT:-120}
work=$(mktemp -d /tmp/runv-sec.XXXXXX)
# The state root as a careless admin would leave it: world-readable all the way down.
root=$work/root
mkdir -p "$root"
chmod 0755 "$work" "$root"
ids=()
cleanup() {
  local id m
  for id in "${ids[@]}"; do timeout 60 "$RUNTIME" --root "$root" delete -f "$id" >/dev/null 2>&1; done
  awk -v d="$work/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rt() { timeout -k 5 "$T" "$RUNTIME" --root "$root" "$@"; }
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
# wait_for FILE TEXT: up to 60 s for TEXT to appear in FILE.
wait_for() {
  local i
  for ((i = 0; i < 120; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}
caps='["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE","CAP_CHOWN","CAP_FOWNER","CAP_FSETID","CAP_MKNOD","CAP_DAC_OVERRIDE","CAP_SETUID","CAP_SETGID"]'
caps_patch="{\"process\": {\"noNewPrivileges\": false, \"capabilities\": {\"bounding\": $caps, \"effective\": $caps, \"permitted\": $caps}}}"

# ---- planted setuid binary and device node ------------------------------------------
# The bundle on a tmpfs of its own, which allows setuid and devices (the box's /tmp is
# nosuid,nodev, and a bind mount would inherit that): only runv's flags stand between.
mkdir -p "$work/plantfs"
mount -t tmpfs -o size=64m,mode=0755 tmpfs "$work/plantfs"
b=$work/plantfs/plant
bundle_make "$b" --patch "$caps_patch" -- sh -c \
  'chmod 4755 /tmp/hostid && mknod -m 666 /tmp/null c 1 3 && echo planted && exec sleep 1000'
# The host's own `id` (dynamic: it runs on the host, not in the guest), which the
# container makes setuid-root.
cp /usr/bin/id "$b/rootfs/tmp/hostid"
ids+=(plant)
rt run -d --bundle "$b" plant >"$work/plant.out" 2>&1 </dev/null
if wait_for "$work/plant.out" planted; then
  ok "a container made a setuid-root binary and a device node in its rootfs"
else
  not_ok "the planting container did not start"; show "$work/plant.out"
fi
planted=$(find "$root/plant" -path '*/rootfs/tmp/hostid' 2>/dev/null | head -n 1)
check "root finds the planted binary under runv's state directory ($planted)" test -n "$planted"
check "<root>/<id> is 0711 and <root>/<id>/share 0700 ($(stat -c '%n %a' "$root/plant" "$root/plant/share" 2>&1 | tr '\n' ' '))" \
  test "$(stat -c %a "$root/plant")/$(stat -c %a "$root/plant/share")" = 711/700
if nobody stat "$planted" >"$work/nobody.out" 2>&1; then
  not_ok "an unprivileged host user reached the planted binary"; show "$work/nobody.out"
else
  ok "an unprivileged host user cannot reach it ($(head -c 120 "$work/nobody.out"))"
fi
# Even where it can be reached (root), the share's mounts honour neither bit.
opts=$(findmnt -n -o OPTIONS --target "$planted" 2>/dev/null)
check "the rootfs mount under the share is nosuid,nodev ($opts)" \
  bash -c '[[ ,$1, == *,nosuid,* && ,$1, == *,nodev,* ]]' _ "$opts"
# Past the directory modes: root lends an unprivileged process a descriptor of the
# planted binary's directory, through which it runs the binary.
out=$(nobody "$BASH" -c 'exec /proc/self/fd/9/hostid -u' 9<"${planted%/hostid}" 2>&1)
check "run by an unprivileged user through the share, the setuid binary is not root (id -u: ${out:-nothing})" \
  bash -c '[[ $1 =~ ^[0-9]+$ && $1 != 0 ]]' _ "$out"
check "root cannot open the planted device node through the share" \
  bash -c '! head -c 1 "$1" >/dev/null 2>&1' _ "${planted%/hostid}/null"
# The VMM of that sandbox, as an attacker who took it over would find it. runv started
# the supervisor; the VMM is its child, PID 1 of a namespace of its own.
status_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
sup=$(for p in $(pgrep -x runv-vmm); do
  [[ $(cat "/proc/$(status_of "$p" PPid)/comm" 2>/dev/null) != runv-vmm ]] && echo "$p"
done | head -n 1)
vmm_pid=$(pgrep -P "${sup:-0}" -x runv-vmm | head -n 1)
check "runv-vmm runs with NoNewPrivs: 1 (pid ${vmm_pid:-none}: $(status_of "${vmm_pid:-0}" NoNewPrivs))" \
  test "$(status_of "${vmm_pid:-0}" NoNewPrivs)" = 1
# CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP: bits 0 1 3 4 6 7 27 31.
kept=00000000880000db
caps_seen=$(for k in CapInh CapPrm CapEff CapBnd CapAmb; do echo -n "$k=$(status_of "${vmm_pid:-0}" $k) "; done)
check "runv-vmm keeps only the virtio-fs capabilities, in every set ($caps_seen)" \
  test "$caps_seen" = "CapInh=0000000000000000 CapPrm=$kept CapEff=$kept CapBnd=$kept CapAmb=0000000000000000 "
filters=$(for t in /proc/"${vmm_pid:-0}"/task/*; do
  echo -n "$(cat "$t/comm")=$(awk '/^Seccomp:/ { print $2 }' "$t/status") "
done)
check "every runv-vmm thread runs under a seccomp filter (mode 2): $filters" \
  bash -c '[[ $1 == *vcpu0=2* && $1 == *devices=2* && $1 != *=0* && $1 != *=1\ * ]]' _ "$filters"
check "runv-vmm has a mount and a PID namespace of its own" bash -c \
  '[[ $(readlink /proc/$1/ns/mnt) != $(readlink /proc/self/ns/mnt) && $(readlink /proc/$1/ns/pid) != $(readlink /proc/self/ns/pid) ]]' _ "${vmm_pid:-0}"
jail_root=$(ls -A "/proc/${vmm_pid:-0}/root/" 2>&1 | tr '\n' ' ')
check "runv-vmm's root holds only what the VM needs: /dev/kvm, no shell, no /etc/passwd ($jail_root)" \
  bash -c 'r=/proc/$1/root; [[ -c $r/dev/kvm && ! -e $r/etc/passwd && ! -e $r/bin/sh && ! -e $r/usr/bin && ! -e $r/dev/mem ]]' _ "${vmm_pid:-0}"
check "its supervisor has no capability and a seccomp filter ($(status_of "${sup:-0}" CapBnd) $(status_of "${sup:-0}" Seccomp))" \
  test "$(status_of "${sup:-0}" CapBnd)/$(status_of "${sup:-0}" CapEff)/$(status_of "${sup:-0}" Seccomp)" = 0000000000000000/0000000000000000/2
# The sandbox's host cgroup (no cgroupsPath in the spec: runv/<id>), with its bounds:
# 256 MiB of guest RAM + 64 MiB of host overhead, 256 tasks + 1 per vCPU.
pcg=/sys/fs/cgroup/runv/plant
check "the sandbox's host cgroup caps memory at guest RAM + overhead ($(cat "$pcg/memory.max" 2>&1)) and tasks ($(cat "$pcg/pids.max" 2>&1))" \
  test "$(cat "$pcg/memory.max" 2>&1)/$(cat "$pcg/pids.max" 2>&1)" = $((320 << 20))/257
check "runv-vmm, its supervisor and the shim are in it" bash -c \
  'p=$(cat "$1/cgroup.procs") && for x in "${@:2}"; do grep -qx "$x" <<<"$p" || exit 1; done' \
  _ "$pcg" "${sup:-0}" "${vmm_pid:-0}" "$(pgrep -x runv-shim | head -n 1)"
rt delete -f plant >/dev/null 2>&1
check "delete removes the host cgroup" test ! -e "$pcg"
umount "$work/plantfs"

# ---- a guest that fills host memory through its share -------------------------------
# The rootfs on a host tmpfs: every byte the guest writes there is host memory, charged
# to runv-vmm. With 128 MiB of RAM and 16 MiB of overhead the sandbox's cgroup stops at
# 144 MiB; the guest asks for 240 MiB more. The kernel ends the sandbox instead.
mkdir -p "$work/hogfs"
mount -t tmpfs -o size=512m,mode=0755 tmpfs "$work/hogfs"
printf 'host_memory_overhead_mib = 16\n' >"$work/hog.toml"
b=$work/hogfs/hog
bundle_make "$b" --annotation io.runv.memory_mib=128 -- \
  sh -c 'dd if=/dev/zero of=/tmp/fill bs=1M count=240; sleep 1000'
ids+=(hog)
hcg=/sys/fs/cgroup/runv/hog
rt --config "$work/hog.toml" run -d --bundle "$b" hog >"$work/hog.out" 2>&1 </dev/null
for ((i = 0; i < 120; i++)); do
  [[ $(rt state hog 2>/dev/null | jq -r .status) == stopped ]] && break
  sleep 1
done
check "the memory.max of its host cgroup is 144 MiB ($(cat "$hcg/memory.max" 2>&1))" \
  test "$(cat "$hcg/memory.max" 2>&1)" = $((144 << 20))
check "the sandbox stopped when its host memory ran out ($(rt state hog 2>&1 | jq -r .status 2>&1))" \
  test "$(rt state hog 2>/dev/null | jq -r .status)" = stopped
check "by the host's OOM killer, in its own cgroup ($(grep oom_kill "$hcg/memory.events" 2>&1))" \
  bash -c '[[ $(awk "/^oom_kill /{print \$2}" "$1/memory.events") -ge 1 ]]' _ "$hcg"
fill=$(stat -c %s "$b/rootfs/tmp/fill" 2>/dev/null || echo 0)
check "the host tmpfs got less than the cap from it ($((fill >> 20)) MiB of 240 asked)" \
  test "$fill" -lt $((144 << 20))
rt delete -f hog >/dev/null 2>&1
check "delete removes its host cgroup" test ! -e "$hcg"
umount "$work/hogfs"

# ---- a read-only rbind volume with a submount ---------------------------------------
mkdir -p "$work/vol/sub"
mount -t tmpfs -o size=1m tmpfs "$work/vol/sub"
echo top >"$work/vol/top.txt"
b=$work/rovol
# Privileged, the container first undoes the guest's read-only mount, as a hostile guest
# could: only the host's flags on the share stand between it and the volume.
admin_caps=${caps%]},\"CAP_SYS_ADMIN\"]
bundle_make "$b" --patch "{\"process\": {\"capabilities\": {\"bounding\": $admin_caps, \"effective\": $admin_caps, \"permitted\": $admin_caps}},
  \"mounts\": [{\"destination\": \"/vol\", \"type\": \"bind\", \"source\": \"$work/vol\", \"options\": [\"rbind\", \"ro\"]}]}" -- sh -c \
  'mount -t proc proc /proc; cat /vol/top.txt; mount -o remount,bind,rw /vol && echo guest-rw; touch /vol/x 2>&1 || echo top-refused; touch /vol/sub/x 2>&1 || echo sub-refused'
ids+=(rovol)
out=$(rt run --bundle "$b" rovol 2>&1 </dev/null)
flat=$(echo "$out" | tr '\n' ' ')
check "a read-only rbind volume, remounted read-write in the guest: the top still refuses writes ($flat)" \
  bash -c '[[ $1 == *guest-rw* && $1 == *top-refused* ]]' _ "$flat"
check "a read-only rbind volume: its submount refuses writes too" grep -q sub-refused <<<"$out"
check "the host's submount is untouched" test ! -e "$work/vol/sub/x"
rt delete -f rovol >/dev/null 2>&1
umount "$work/vol/sub"

# ---- a container that tries to take an exec's stdio over vsock ----------------------
b=$work/steal
bundle_make "$b" -- sh -c 'echo up; exec sleep 1000'
mkdir -p "$b/rootfs/tools"
cp "$RUNV_VSOCKTEST" "$b/rootfs/tools/vsocktest"
ids+=(steal)
rt run -d --bundle "$b" steal >"$work/steal-init.out" 2>&1 </dev/null
wait_for "$work/steal-init.out" up || { not_ok "the attacker's container did not start"; show "$work/steal-init.out"; }
# The init took ports 2000-2002 and the attacker's own exec takes 2003-2005 (runv hands
# them out in order): the exec after it gets 2006-2008, which the attacker sweeps.
rt exec -d steal sh -c '/tools/vsocktest steal 2006 2008 15 >/tmp/steal.log 2>&1' </dev/null
sleep 3
head -c 200000 /dev/urandom | base64 -w 76 >"$work/input"
rt exec steal sh -c 'cat; echo exec-done' <"$work/input" >"$work/exec.out" 2>"$work/exec.err"
rc=$?
{ cat "$work/input"; echo exec-done; } >"$work/expected"
check "the exec ran (exit $rc)" test "$rc" = 0
if cmp -s "$work/expected" "$work/exec.out"; then
  ok "its stdin and stdout arrived whole ($(wc -c <"$work/input") bytes through cat)"
else
  not_ok "its stdio was not what was sent"; show "$work/exec.err"
  head -c 300 "$work/exec.out" | sed 's/^/#   /'
fi
check "nothing forged reached its stdout or stderr" \
  bash -c '! grep -q FAKE-OUTPUT "$1" "$2"' _ "$work/exec.out" "$work/exec.err"
for ((i = 0; i < 12; i++)); do
  rt exec steal cat /tmp/steal.log >"$work/steal.log" 2>&1
  grep -q '^steal:' "$work/steal.log" && break
  sleep 5
done
summary=$(grep '^steal:' "$work/steal.log")
conns=$(sed -E 's/^steal: ([0-9]+) connections.*/\1/' <<<"$summary")
check "the attacker did connect to the exec's stdio ports ($summary)" \
  bash -c '[[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]]' _ "$conns"
check "and got nothing through them" bash -c '[[ $1 == *", 0 bytes" ]]' _ "$summary"
[[ $summary == *", 0 bytes" ]] || show "$work/steal.log"
rt kill steal 9 >/dev/null 2>&1
rt delete -f steal >/dev/null 2>&1

# ---- an AppArmor profile, as Docker sets on an AppArmor host ------------------------
b=$work/lsm
bundle_make "$b" --patch '{"process": {"apparmorProfile": "docker-default"}}' -- echo lsm-ran
ids+=(lsm)
out=$(rt run --bundle "$b" lsm 2>&1 </dev/null)
check "a spec with apparmorProfile runs in the guest, which has no LSM ($(echo "$out" | tr '\n' ' '))" \
  grep -qx lsm-ran <<<"$out"
rt delete -f lsm >/dev/null 2>&1

# ---- nothing left ---------------------------------------------------------------------
sleep 1
left=$(pgrep -a -x runv-vmm; pgrep -a -x runv-shim)
check "no runv-vmm or runv-shim process left${left:+ ($left)}" test -z "$left"
check "nothing left under the state root" test -z "$(ls -A "$root" 2>/dev/null)"
finish
