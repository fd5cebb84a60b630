#!/usr/bin/env bash
# containerd drives the runtime: Debian's containerd (1.6) with its root, state, socket and
# config in a temp dir, the busybox image of tests/image/build.sh imported with
# `ctr image import`, then ctr's run / run -t / task exec / task kill through the runc shim
# (io.containerd.runc.v2) with --runc-binary $RUNTIME. Generic over the runtime:
# RUNTIME=/path/to/runv (default: runv on PATH) or RUNTIME=$(command -v runc).
# Needs root, containerd, ctr, containerd-shim-runc-v2, busybox-static and python3.
# containerd (and so the shim and the runtime) inherits this environment: for runv, set
# RUNV_KERNEL / RUNV_INITRD / RUNV_VMM (or RUNV_CONFIG) here. RT_TIMEOUT (default 120 s)
# limits every ctr call; KEEP_WORK=1 keeps the temp dir (containerd's log, the bundles
# with the runtime's log.json) for a post-mortem.
#
#   RUNTIME=$(command -v runc) tests/e2e/containerd.sh
#   tests/kvmbox/kvmbox --env RUNTIME=/path/to/runv -- tests/e2e/containerd.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

RUNTIME=${RUNTIME:-$(command -v runv || true)}
if [[ -z $RUNTIME || ! -x $RUNTIME ]]; then
  echo "containerd.sh: no runtime binary: set RUNTIME (runv is not on PATH)" >&2
  exit 2
fi
PYTHON=${PYTHON:-/usr/bin/python3}
for tool in containerd ctr containerd-shim-runc-v2 "$PYTHON" timeout; do
  command -v "$tool" >/dev/null || { echo "containerd.sh: $tool is missing (apt-get install containerd)" >&2; exit 2; }
done
T=${RT_TIMEOUT:-120}
IS_RUNV=
[[ $("$RUNTIME" --version 2>/dev/null) == *runv* ]] && IS_RUNV=1
echo "# runtime: $RUNTIME ($("$RUNTIME" --version 2>&1 | head -n 1)); $(containerd --version)"

work=$(mktemp -d "${TMPDIR:-/tmp}/runv-ctrd.XXXXXX")
ns=runv-e2e-$$ # containerd namespace; also the cgroup parent of the containers
sock=$work/containerd.sock
runc_root=$work/runc-root
containerd_pid=

cleanup() {
  local c
  if [[ -n $containerd_pid ]]; then
    for c in $(ctr_ task ls -q 2>/dev/null); do
      ctr_ task kill -s SIGKILL "$c" >/dev/null 2>&1
      ctr_ task delete --force "$c" >/dev/null 2>&1
    done
    for c in $(ctr_ container ls -q 2>/dev/null); do ctr_ container delete "$c" >/dev/null 2>&1; done
    kill "$containerd_pid" 2>/dev/null
    timeout 20 tail --pid="$containerd_pid" -f /dev/null
    kill -9 "$containerd_pid" 2>/dev/null
  fi
  # Shims and whatever else still names this run's temp dir (their -address / --root).
  pgrep -f -- "$work" | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  # Container processes that outlived their shim: they are in this run's cgroups.
  cat /sys/fs/cgroup/*/"$ns"/*/cgroup.procs /sys/fs/cgroup/"$ns"/*/cgroup.procs 2>/dev/null |
    while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  sleep 0.2
  umount_under "$work"
  find /sys/fs/cgroup -depth -type d -path "*/$ns*" -exec rmdir {} + 2>/dev/null
  if [[ -n ${KEEP_WORK:-} ]]; then
    echo "# KEEP_WORK: containerd's root, state and logs stay in $work"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT

# umount_under DIR: lazily unmounts every mount below DIR, deepest first.
umount_under() {
  awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null; done
}

# ctr_ ARGS...: ctr on this run's containerd and namespace, time-limited.
ctr_() { timeout -k 5 "$T" ctr --address "$sock" --namespace "$ns" "$@"; }
# ctr_run ARGS...: `ctr run` with the runtime under test.
ctr_run() {
  ctr_ run --runtime io.containerd.runc.v2 --runc-binary "$RUNTIME" --runc-root "$runc_root" \
    --fifo-dir "$work/fifo" "$@"
}

# A pseudo-terminal for `ctr run -t` / `ctr task exec -t`: ptyrun.py ROWS COLS SECS CMD...
# runs CMD as a session leader on a new PTY of that size, copies its output to stdout and
# exits with CMD's status (124 after SECS).
cat >"$work/ptyrun.py" <<'PY'
import fcntl, os, select, signal, struct, sys, termios, time

rows, cols, secs, cmd = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
master, slave = os.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(master)
    os.execvp(cmd[0], cmd)
os.close(slave)
deadline, status = time.time() + secs, None
while True:
    left = deadline - time.time()
    if left <= 0:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.stdout.buffer.write(b"\nptyrun: timed out\n")
        sys.exit(124)
    if select.select([master], [], [], min(left, 0.5))[0]:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every holder of the slave side closed it
            data = b""
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            continue
        break
    if status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
if status is None:
    _, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
PY

# ---- containerd ------------------------------------------------------------------

# Snapshotter: overlayfs where this file system takes an overlay mount (the box's /tmp is
# a tmpfs, which does); native (plain copies) where it does not, e.g. overlay on overlay.
snapshotter=overlayfs
mkdir -p "$work/probe"/{lower,upper,work,merged}
if mount -t overlay overlay -o "lowerdir=$work/probe/lower,upperdir=$work/probe/upper,workdir=$work/probe/work" \
  "$work/probe/merged" 2>/dev/null; then
  umount "$work/probe/merged"
else
  snapshotter=native
  echo "# snapshotter native: an overlay mount fails on $(stat -f -c %T "$work")"
fi
rm -rf "$work/probe"

mkdir -p "$work/fifo" "$runc_root"
{
  containerd_config "$work" "$sock" io.containerd.grpc.v1.cri
  cat <<EOF
[plugins."io.containerd.runtime.v1.linux"]
  runtime = "$RUNTIME"
[plugins."io.containerd.service.v1.tasks-service"]
  rdt_config_file = ""
EOF
} >"$work/config.toml"
containerd --config "$work/config.toml" --log-level info >"$work/containerd.log" 2>&1 &
containerd_pid=$!
up=
for _ in $(seq 100); do
  if [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$containerd_pid" 2>/dev/null || break
  sleep 0.2
done
check "containerd starts with root, state and socket in $work" test -n "$up"
if [[ -z $up ]]; then
  show "$work/containerd.log"
  finish
  exit
fi

image=$("$here/../image/build.sh")
ref=$("$here/../image/build.sh" --ref)
ctr_ image import --snapshotter "$snapshotter" "$image" >"$work/import.out" 2>&1
check "ctr image import of the busybox tarball" eval "ctr_ image ls -q | grep -qx '$ref'"
[[ $(ctr_ image ls -q) == *"$ref"* ]] || show "$work/import.out"

# ---- cases ------------------------------------------------------------------------

# task_status ID: the task's status in `ctr task ls` (RUNNING, STOPPED, ...).
task_status() { ctr_ task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $3 }'; }
# wait_task ID STATUS SECS: polls until the task has STATUS.
wait_task() {
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    [[ $(task_status "$1") == "$2" ]] && return 0
    sleep 0.3
  done
  return 1
}
# ctr resizes the PTY only after the process started: wait (up to 10 s) for a size.
tty_probe='i=0; while [ $i -lt 100 ] && [ "$(stty size 2>/dev/null)" = "0 0" -o -z "$(stty size 2>/dev/null)" ]; do sleep 0.1; i=$((i+1)); done; tty; stty size'

# ctr run --rm: output and exit code.
ctr_run --rm --snapshotter "$snapshotter" "$ref" run7 sh -c 'echo ctr-out; echo ctr-err >&2; exit 7' \
  </dev/null >"$work/run7.out" 2>"$work/run7.err"
rc=$?
check "ctr run --rm: the process's exit code 7 is ctr's (got $rc)" test $rc = 7
check "ctr run --rm: stdout and stderr separated" \
  eval "test \"\$(cat '$work/run7.out')\" = ctr-out && grep -qx ctr-err '$work/run7.err'"
[[ $rc == 7 ]] || show "$work/run7.out" "$work/run7.err" "$work/containerd.log"

# ctr closes the task's stdin at EOF only once the task exists (an EOF before that is
# lost and `cat` waits forever: a ctr race), so the pipe ends once the task runs.
out=$({
  echo hi
  wait_task stdin RUNNING 60
} | ctr_run --rm --snapshotter "$snapshotter" "$ref" stdin cat 2>"$work/stdin.err")
rc=$?
check "ctr run --rm: stdin piped through, EOF ends it (exit $rc, got '$out')" test "$rc:$out" = 0:hi
[[ $rc:$out == 0:hi ]] || show "$work/stdin.err"

# ctr run -t: a terminal of 31x91 (ctr gives its size to the container's PTY).
"$PYTHON" "$work/ptyrun.py" 31 91 "$T" ctr --address "$sock" --namespace "$ns" run -t --rm \
  --runtime io.containerd.runc.v2 --runc-binary "$RUNTIME" --runc-root "$runc_root" \
  --fifo-dir "$work/fifo" --snapshotter "$snapshotter" "$ref" tty sh -c "$tty_probe; exit 3" \
  >"$work/tty.out" 2>&1
rc=$?
check "ctr run -t: exit code 3 (got $rc)" test $rc = 3
check "ctr run -t: the process has a PTY of the terminal's size (31 91)" \
  eval "grep -q '^/dev/pts/' '$work/tty.out' && grep -q '^31 91' '$work/tty.out'"
grep -q "^31 91" "$work/tty.out" || show "$work/tty.out"

# ctr run -d, then exec and kill.
ctr_run -d --snapshotter "$snapshotter" "$ref" daemon sh -c 'trap "exit 0" TERM; sleep 1000 & wait' \
  </dev/null >"$work/daemon.out" 2>&1
check "ctr run -d: starts a detached task" test $? = 0
check "ctr task ls: the detached task is RUNNING" wait_task daemon RUNNING 60
ctr_ task exec --fifo-dir "$work/fifo" --exec-id e1 daemon sh -c 'echo in-exec $(hostname); exit 4' \
  </dev/null >"$work/exec.out" 2>"$work/exec.err"
rc=$?
check "ctr task exec: its own exit code 4 (got $rc)" test $rc = 4
check "ctr task exec: its output" grep -q '^in-exec' "$work/exec.out"
[[ $rc == 4 ]] || show "$work/exec.out" "$work/exec.err"
"$PYTHON" "$work/ptyrun.py" 27 83 "$T" ctr --address "$sock" --namespace "$ns" task exec -t \
  --fifo-dir "$work/fifo" --exec-id e2 daemon sh -c "$tty_probe" >"$work/exec-tty.out" 2>&1
rc=$?
check "ctr task exec -t: a PTY of the terminal's size (exit $rc)" \
  eval "test $rc = 0 && grep -q '^/dev/pts/' '$work/exec-tty.out' && grep -q '^27 83' '$work/exec-tty.out'"
grep -q "^27 83" "$work/exec-tty.out" || show "$work/exec-tty.out"
check "ctr task exec: the task still runs afterwards" test "$(task_status daemon)" = RUNNING
ctr_ task kill daemon
check "ctr task kill (SIGTERM) exits 0" test $? = 0
check "ctr task kill: the task stops" wait_task daemon STOPPED 60
ctr_ task delete daemon >/dev/null 2>&1 && ctr_ container delete daemon >/dev/null
check "ctr task delete + container delete" test $? = 0

ctr_run -d --snapshotter "$snapshotter" "$ref" stubborn sleep 1000 </dev/null >/dev/null 2>&1 &&
  wait_task stubborn RUNNING 60
check "ctr run -d: a task without a TERM handler runs" test $? = 0
ctr_ task kill -s SIGKILL stubborn
check "ctr task kill -s SIGKILL: the task stops" wait_task stubborn STOPPED 60
ctr_ task delete stubborn >/dev/null 2>&1 && ctr_ container delete stubborn >/dev/null

# ---- nothing left ---------------------------------------------------------------------
check "no task left" test -z "$(ctr_ task ls -q)"
check "no container left" test -z "$(ctr_ container ls -q)"
# The shim keeps one directory per containerd namespace under --runc-root; no container
# state may be left in it.
check "no container state left under --runc-root" test -z "$(find "$runc_root" -mindepth 2 2>/dev/null)"
kill "$containerd_pid"
timeout 30 tail --pid="$containerd_pid" -f /dev/null
check "containerd stops on SIGTERM" eval "! kill -0 $containerd_pid 2>/dev/null"
wait "$containerd_pid" 2>/dev/null
containerd_pid=
left=$(pgrep -a -f -- "$work")
if [[ -n $IS_RUNV && -n ${KVMBOX:-} ]]; then
  left+=$(pgrep -a -x runv-vmm; pgrep -a -x runv-shim) # names of at most 15 characters
fi
check "no shim or container process left" test -z "$left"
[[ -z $left ]] || echo "# left: $left"
check "no mount left under $work" test -z "$(awk -v d="$work/" 'index($5, d) == 1' /proc/self/mountinfo)"
check "no container cgroup left (under $ns)" \
  test -z "$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path "*/$ns/*" 2>/dev/null)"
[[ $FAIL == 0 ]] || show "$work/containerd.log"
finish
