#!/bin/bash
# Self-test for tests/kvmbox/kvmbox. Boots the box six times (a few seconds
# each with a warm cache, plus a 40 s sleep and a ~30 s stall; the first run may
# build the box). Prints one line
# per check and a final "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
kvmbox=$here/kvmbox
python=/usr/bin/python3
[ -x "$python" ] || python=python3 # /usr/bin's avoids slow shims (pyenv) in the box

passed=0 failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kvmbox-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() { # check NAME DETAIL CONDITION...
  local name=$1 detail=$2
  shift 2
  if "$@"; then
    echo "ok   - $name"
    passed=$((passed + 1))
  else
    echo "FAIL - $name${detail:+ ($detail)}"
    failed=$((failed + 1))
  fi
}

# 1. A trivial command succeeds.
"$kvmbox" -- true >"$tmp/true.out" 2>"$tmp/true.err"
rc=$?
check "kvmbox -- true exits 0" "exit $rc; stderr: $(tail -n 1 "$tmp/true.err")" \
  test "$rc" = 0 -a ! -s "$tmp/true.out" -a ! -s "$tmp/true.err"

# 2. CMD's exit status comes back.
"$kvmbox" -- sh -c 'exit 7' >/dev/null 2>"$tmp/seven.err"
rc=$?
check "kvmbox -- sh -c 'exit 7' exits 7" "exit $rc; stderr: $(tail -n 1 "$tmp/seven.err")" test "$rc" = 7

# 3-6. Output, cwd, --with and /dev/kvm, all from one boot, run from this
# directory (the box must start CMD here).
mkdir "$tmp/share"
cd "$here" || exit 1
# shellcheck disable=SC2016 # expanded by the bash inside the box
"$kvmbox" --with "$tmp/share" -- bash -c '
  echo stdout-marker
  echo stderr-marker >&2
  echo "cwd=$PWD"
  echo written-in-the-box >"$1/file"
  "$2" ./kvm-smoke.py >"$1/kvm" 2>&1
  echo "kvm-exit=$?"
' _ "$tmp/share" "$python" >"$tmp/out" 2>"$tmp/err"
rc=$?
cd - >/dev/null || exit 1
expected=$(printf '%s\n' stdout-marker "cwd=$here" kvm-exit=0)
# Exactly CMD's lines: no kernel or init messages on either stream.
check "stdout and stderr reach the caller, nothing else does" \
  "exit $rc; stdout: $(head -c 300 "$tmp/out" | tr '\n' '|'); stderr: $(head -c 300 "$tmp/err" | tr '\n' '|')" \
  test "$(cat "$tmp/out")" = "$expected" -a "$(cat "$tmp/err")" = stderr-marker
check "CMD runs in the caller's directory" "got: $(grep cwd= "$tmp/out")" grep -qx "cwd=$here" "$tmp/out"
check "--with DIR writes are visible on the host" "file: $(cat "$tmp/share/file" 2>&1)" \
  test "$(cat "$tmp/share/file" 2>/dev/null)" = written-in-the-box
check "/dev/kvm works (API version 12, KVM_CREATE_VM, a guest runs to HLT)" \
  "$(tr '\n' '|' <"$tmp/share/kvm" 2>&1)" \
  grep -q '^run: exit reason 5 (hlt)$' "$tmp/share/kvm"

# 7. Timeout: exit 124, and the box's qemu is gone. The --with directory
# names this run's qemu on its command line.
mkdir "$tmp/timeout-marker"
start=$(date +%s)
"$kvmbox" --with "$tmp/timeout-marker" --timeout 5 -- sleep 100 >/dev/null 2>"$tmp/timeout.err"
rc=$?
took=$(($(date +%s) - start))
sleep 0.5
leaked=$(pgrep -f -- "path=$tmp/timeout-marker" || true)
check "--timeout 5 -- sleep 100 exits 124 (after ${took}s) and leaves no qemu" \
  "exit $rc; leaked qemu pids: ${leaked:-none}" test "$rc" = 124 -a -z "$leaked"

# 8. Stall watch: a box that sleeps longer than KVMBOX_STALL_SECS is not a stall (its
# periodic tick keeps QEMU's CPU time moving) ...
KVMBOX_STALL_SECS=20 "$kvmbox" -- sleep 40 >/dev/null 2>"$tmp/sleep.err"
rc=$?
check "KVMBOX_STALL_SECS=20 -- sleep 40 exits 0: an idle box is not a stalled one" \
  "exit $rc; stderr: $(tail -n 1 "$tmp/sleep.err")" test "$rc" = 0

# 9. ... while a QEMU that stops using CPU (SIGSTOP here; a lost timer interrupt in
# real life) is ended after KVMBOX_STALL_SECS with a message saying so, and no qemu stays.
mkdir "$tmp/stall-marker"
KVMBOX_STALL_SECS=20 "$kvmbox" --with "$tmp/stall-marker" --timeout 300 -- sleep 200 \
  >/dev/null 2>"$tmp/stall.err" &
box=$!
qemu=''
for _ in $(seq 1 100); do
  qemu=$(pgrep -f -- "path=$tmp/stall-marker" | head -n 1) && [ -n "$qemu" ] && break
  sleep 0.2
done
sleep 5
[ -z "$qemu" ] || kill -STOP "$qemu"
start=$(date +%s)
wait "$box"
rc=$?
took=$(($(date +%s) - start))
sleep 0.5
leaked=$(pgrep -f -- "path=$tmp/stall-marker" || true)
check "a stopped QEMU is reported as a stalled box: exit 124 after ${took}s, no qemu left" \
  "exit $rc; stderr: $(tail -n 1 "$tmp/stall.err"); leaked: ${leaked:-none}" \
  test "$rc" = 124 -a -z "$leaked" -a "$took" -lt 120
check "the stall message names the cause" "$(tail -n 1 "$tmp/stall.err")" \
  grep -q 'the box stalled: QEMU used no CPU' "$tmp/stall.err"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
