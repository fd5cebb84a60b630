#!/usr/bin/env bash
# The runc-compatible CLI suite, generic over the runtime binary: RUNTIME=/path/to/runv
# (default: runv on PATH) or RUNTIME=$(command -v runc), the reference it is proven against.
# Needs root, busybox-static, jq and python3. Every case uses a temp --root and temp
# bundles (tests/e2e/bundle.sh). Every runtime call is time-limited (RT_TIMEOUT, default
# 120 s) and every case too (CASE_TIMEOUT, default 6 * RT_TIMEOUT: the case and all it
# started are killed), so a hang is a "not ok" line, never a stuck suite.
# RUNTIME_CASES="lifecycle exec ..." runs only those cases (names: see the end);
# KEEP_WORK=1 keeps the temp dir (bundles, --root, logs) for a post-mortem.
#
# The suite makes itself a child subreaper, so whatever the runtime daemonizes (runc's
# init, runv's runv-vmm and runv-shim) stays its descendant: "no process left" means no
# descendant of the suite left, which is exact whatever the runtime. Extra checks when the
# runtime is runv (`--version` says runv): no runv-vmm / runv-shim anywhere (inside
# kvmbox), a wedged VMM (SIGSTOP) for kill 9 and delete --force, and a missing guest
# kernel. runv finds its kernel, initramfs and VMM through its own environment
# (RUNV_KERNEL, RUNV_INITRD, RUNV_VMM or RUNV_CONFIG), which the suite passes through.
#
#   RUNTIME=$(command -v runc) tests/e2e/runtime.sh
#   tests/kvmbox/kvmbox --env RUNTIME=/path/to/runv --env RUNV_KERNEL ... -- tests/e2e/runtime.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Child subreaper (PR_SET_CHILD_SUBREAPER = 36; kept across execve).
if [[ -z ${RUNTIME_SH_SUBREAPER:-} ]]; then
  export RUNTIME_SH_SUBREAPER=1
  exec /usr/bin/python3 -c '
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("runtime.sh: prctl(PR_SET_CHILD_SUBREAPER) failed")
os.execv(sys.argv[1], sys.argv[1:])' "$BASH" "$0" "$@"
fi

source "$here/../lib.sh"
source "$here/bundle.sh"

RUNTIME=${RUNTIME:-$(command -v runv || true)}
if [[ -z $RUNTIME || ! -x $RUNTIME ]]; then
  echo "runtime.sh: no runtime binary: set RUNTIME (runv is not on PATH)" >&2
  exit 2
fi
for tool in jq "$PYTHON" timeout; do
  command -v "$tool" >/dev/null || { echo "runtime.sh: $tool is missing" >&2; exit 2; }
done
T=${RT_TIMEOUT:-120}
IS_RUNV=
[[ $("$RUNTIME" --version 2>/dev/null) == *runv* ]] && IS_RUNV=1
echo "# runtime: $RUNTIME ($("$RUNTIME" --version 2>&1 | head -n 1))"

work=$(mktemp -d "${TMPDIR:-/tmp}/runv-e2e.XXXXXX")
[[ -n ${KEEP_WORK:-} ]] && echo "# KEEP_WORK: bundles, states and logs stay in $work"
root=$work/root
cg=/runv-e2e-$$ # every container's cgroupsPath is $cg/<id>
# Each case runs in a subshell (so that a case that overruns CASE_TIMEOUT can be killed
# whole): its containers ("ROOT ID" lines) and results go to files the suite reads.
: >"$work/ids"
: >"$work/results"
ok() { echo "ok - $*"; echo ok >>"$work/results"; }
not_ok() { echo "not ok - $*"; echo fail >>"$work/results"; }
finish() {
  PASS=$(grep -c '^ok' "$work/results") FAIL=$(grep -c '^fail' "$work/results")
  echo "$PASS passed, $FAIL failed"
  [[ $FAIL -eq 0 ]]
}
# track ID: a container to delete --force at the end of the case (or of the suite).
track() { echo "$root $1" >>"$work/ids"; }
# untrack: the case removed its containers itself.
untrack() { : >"$work/ids"; }

# alive PID: PID is a number > 0 of a live process.
alive() { [[ $1 =~ ^[1-9][0-9]*$ ]] && kill -0 "$1" 2>/dev/null; }

# jqe FILTER...: jq -e without its output (the filter's truth is the status).
jqe() { jq -e "$@" >/dev/null; }

# rt ARGS...: the runtime with the current $root, killed after $T seconds.
rt() { timeout -k 5 "$T" "$RUNTIME" --root "$root" "$@"; }

# descendants: "PID ARGS" of every live process below this suite (but ps itself, the
# caller and the case watchdog, whose pid is in $work/keep, with its children).
descendants() {
  ps -e -o pid=,ppid=,stat=,args= >"$work/ps.all"
  awk -v top=$$ -v self=$BASHPID -v keepfile="$work/keep" '
    BEGIN { while ((getline k < keepfile) > 0) keep[k] = 1 }
    { pid[NR] = $1; ppid[NR] = $2; stat[NR] = $3; line[NR] = $0 }
    END {
      mark[top] = 1
      do {
        grew = 0
        for (i = 1; i <= NR; i++)
          if (!(pid[i] in mark) && !(pid[i] in keep) && (ppid[i] in mark)) { mark[pid[i]] = 1; grew = 1 }
      } while (grew)
      for (i = 1; i <= NR; i++) {
        if (pid[i] == top || pid[i] == self || !(pid[i] in mark) || stat[i] ~ /^Z/) continue
        args = line[i]; sub(/^ *[0-9]+ +[0-9]+ +[^ ]+ +/, "", args)
        if (args ~ /^ps -e -o pid=/) continue
        print pid[i], args
      }
    }' "$work/ps.all"
}

# cgroup_dirs ID: the host cgroup directories of container ID that exist.
cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/"$cg/$1" /sys/fs/cgroup/*/"$cg/$1"; do
    [[ -d $d ]] && echo "$d"
  done
}

# delete_all: delete --force every container this suite created (with the current root).
delete_all() {
  local r id
  while read -r r id; do
    timeout -k 2 30 "$RUNTIME" --root "$r" delete --force "$id" </dev/null >/dev/null 2>&1
  done <"$work/ids"
  untrack
}

# check_clean WHAT ID...: nothing of these containers left: no state under --root, no
# descendant process, no cgroup, and for runv no runv-vmm / runv-shim. Kills leftovers,
# so that one failure does not spill into the next case.
check_clean() {
  local what=$1 id left=
  shift
  for id; do
    [[ -e $root/$id ]] && left+=" state:$root/$id"
    left+=$(cgroup_dirs "$id" | sed 's/^/ cgroup:/' | tr -d '\n')
  done
  descendants >"$work/left"
  if [[ -n $IS_RUNV && -n ${KVMBOX:-} ]]; then
    # Anywhere in the box (pgrep takes names of at most 15 characters, one at a time).
    { pgrep -a -x runv-vmm; pgrep -a -x runv-shim; } | while read -r pid rest; do
      grep -q "^$pid " "$work/left" || echo "$pid $rest"
    done >>"$work/left"
  fi
  if [[ -n $left || -s $work/left ]]; then
    not_ok "$what: nothing left (state, cgroups, processes)"
    echo "#   left:$left"
    show "$work/left"
    # What the runtime logged for these containers, if it keeps logs in its state dir.
    for id; do
      for f in "$root/$id"/*.log; do [[ -s $f ]] && show "$f"; done
      for f in "$work/$id.out" "$work/$id.err"; do [[ -s $f ]] && show "$f"; done
    done
    awk '{print $1}' "$work/left" | sort -u | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  else
    ok "$what: nothing left (state, cgroups, processes)"
  fi
}

cleanup() {
  delete_all
  descendants >"$work/left" 2>/dev/null
  awk '{print $1}' "$work/left" 2>/dev/null | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  find /sys/fs/cgroup -depth -type d -path "*$cg*" -exec rmdir {} + 2>/dev/null
  [[ -n ${KEEP_WORK:-} ]] || rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# state_of ID: the state JSON on stdout (empty when state fails).
state_of() { rt state "$1" 2>/dev/null; }
status_of() { state_of "$1" | jq -r '.status // empty' 2>/dev/null; }

# wait_status ID STATUS [SECS]: polls until the container has STATUS.
wait_status() {
  local deadline=$((SECONDS + ${3:-30}))
  while ((SECONDS < deadline)); do
    [[ $(status_of "$1") == "$2" ]] && return 0
    sleep 0.2
  done
  return 1
}

# create ID BUNDLE [ARGS...]: create with the container's stdio on files in $work.
create() {
  local id=$1 bundle=$2
  shift 2
  track "$id"
  rt create --bundle "$bundle" "$@" "$id" </dev/null >"$work/$id.out" 2>"$work/$id.err"
}

# running ID BUNDLE_ARGS...: a started container from a fresh bundle; 0 when running.
running() {
  local id=$1
  shift
  bundle_make "$work/$id" --cgroups-path "$cg/$id" --hostname "$id" "$@" &&
    create "$id" "$work/$id" && rt start "$id" && wait_status "$id" running 30 && return 0
  show "$work/$id.err"
  return 1
}

# fails_with WHAT PATTERN CMD...: CMD fails (non-zero) and its stderr matches PATTERN.
fails_with() {
  local what=$1 pattern=$2 rc
  shift 2
  "$@" </dev/null >"$work/fw.out" 2>"$work/fw.err"
  rc=$?
  if [[ $rc != 0 && $rc != 124 ]] && grep -Eq -- "$pattern" "$work/fw.err"; then
    ok "$what (exit $rc: $(head -c 200 "$work/fw.err" | tr '\n' ' '))"
  else
    not_ok "$what: want a failure matching '$pattern', got exit $rc"
    show "$work/fw.out" "$work/fw.err"
  fi
}

# The console-socket receiver: accepts one connection on SOCKET, takes the PTY master
# from SCM_RIGHTS and plays a short dialogue on it. Modes: "shell" (an interactive sh:
# checks that a command runs, that a window resize reaches `stty size`, then exits it)
# and "drain" (just collects the output until the process closes the terminal).
cat >"$work/console.py" <<'PY'
import array, fcntl, os, re, select, signal, socket, struct, sys, termios, time

sock_path, mode, transcript = sys.argv[1], sys.argv[2], sys.argv[3]
signal.alarm(int(os.environ.get("CONSOLE_TIMEOUT", "120")))
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sock_path)
srv.listen(1)
conn, _ = srv.accept()
fds = array.array("i")
msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
for level, kind, data in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
if len(fds) != 1:
    sys.exit("console.py: expected one fd over SCM_RIGHTS, got %d" % len(fds))
master = fds[0]
out = open(transcript, "wb", buffering=0)
buf = b""


def read_until(pattern, secs):
    global buf
    deadline = time.time() + secs
    while True:
        m = re.search(pattern, buf)
        if m:
            buf = buf[m.end():]
            return m
        left = deadline - time.time()
        if left <= 0 or not select.select([master], [], [], left)[0]:
            sys.exit("console.py: no %r within %ss; got %r" % (pattern, secs, buf[-300:]))
        try:
            chunk = os.read(master, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            sys.exit("console.py: terminal closed before %r; got %r" % (pattern, buf[-300:]))
        out.write(chunk)
        buf += chunk


def drain(secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        if not select.select([master], [], [], deadline - time.time())[0]:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return
        if not chunk:
            return
        out.write(chunk)
    sys.exit("console.py: terminal still open after %ss" % secs)


def resize(rows, cols):
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


print("console.py: got the terminal (%s)" % msg, flush=True)
if mode == "drain":
    drain(100)
    sys.exit(0)
resize(24, 80)
os.write(master, b"echo marker-$((6*7))\n")
read_until(rb"marker-42", 60)
os.write(master, b"stty size\n")
read_until(rb"\n24 80\r?\n", 30)
resize(33, 77)
time.sleep(0.5)
os.write(master, b"stty size\n")
read_until(rb"\n33 77\r?\n", 30)
os.write(master, b"exit 3\n")
drain(60)
PY

# console_start SOCKET MODE TRANSCRIPT: the receiver in the background ($console_pid).
console_start() {
  rm -f "$1"
  "$PYTHON" "$work/console.py" "$1" "$2" "$3" >"$3.log" 2>&1 &
  console_pid=$!
  local i
  for i in $(seq 50); do
    [[ -S $1 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---- cases ------------------------------------------------------------------

case_lifecycle() {
  local id=lifecycle b=$work/lifecycle s pid
  bundle_make "$b" --cgroups-path "$cg/$id" --annotation io.runv.test=lifecycle -- sleep 1000
  create "$id" "$b" --pid-file "$work/$id.pid"
  check "lifecycle: create exits 0" test $? = 0
  s=$(state_of $id)
  check "lifecycle: state after create is created" test "$(jq -r .status <<<"$s")" = created
  pid=$(jq -r '.pid // 0' <<<"$s")
  check "lifecycle: created state has a pid ($pid) that is a live process" alive "$pid"
  check "lifecycle: --pid-file holds the state's pid" test "$(cat "$work/$id.pid" 2>/dev/null)" = "$pid"
  check "lifecycle: state has id, ociVersion, bundle and annotations" jqe --arg id $id --arg b "$b" \
    '.id == $id and (.ociVersion | length > 0) and .bundle == $b and .annotations["io.runv.test"] == "lifecycle"' <<<"$s"
  check "lifecycle: list shows it created" \
    jqe --arg id $id 'any(.[]; .id == $id and .status == "created")' < <(rt list --format json)
  rt start $id
  check "lifecycle: start exits 0" test $? = 0
  check "lifecycle: state after start is running" wait_status $id running 30
  check "lifecycle: the pid stays the same after start" test "$(state_of $id | jq -r .pid)" = "$pid"
  fails_with "lifecycle: a second start fails" . rt start $id
  fails_with "lifecycle: delete without --force of a running container fails" . rt delete $id
  check "lifecycle: still running after the refused delete" test "$(status_of $id)" = running
  rt kill $id KILL
  check "lifecycle: kill KILL exits 0" test $? = 0
  check "lifecycle: state becomes stopped" wait_status $id stopped 30
  check "lifecycle: stopped state has no pid (absent or 0)" jqe '(.pid // 0) == 0' < <(state_of $id)
  fails_with "lifecycle: kill of a stopped container says 'container not running'" \
    'container not running' rt kill $id KILL
  rt delete $id
  check "lifecycle: delete of the stopped container exits 0" test $? = 0
  fails_with "lifecycle: state after delete says 'does not exist'" 'does not exist' rt state $id
  check "lifecycle: list no longer shows it" \
    jqe --arg id $id 'all(.[]?; .id != $id)' < <(rt list --format json)
  untrack
  check_clean lifecycle $id
}

case_run_exit_code() {
  local id=run7 b=$work/run7 rc
  bundle_make "$b" --cgroups-path "$cg/$id" -- sh -c 'echo to-stdout; echo to-stderr >&2; exit 7'
  track $id
  rt run --bundle "$b" $id </dev/null >"$work/$id.out" 2>"$work/$id.err"
  rc=$?
  check "run: the process's exit code 7 is run's (got $rc)" test $rc = 7
  check "run: stdout holds exactly the process's stdout" test "$(cat "$work/$id.out")" = to-stdout
  check "run: stderr holds exactly the process's stderr (nothing the runtime logged)" \
    test "$(cat "$work/$id.err")" = to-stderr
  [[ $rc == 7 ]] || show "$work/$id.out" "$work/$id.err"
  fails_with "run: the container is gone after run returns" 'does not exist' rt state $id
  untrack
  check_clean run $id
}

case_stdin() {
  local id=stdin b=$work/stdin out
  bundle_make "$b" --cgroups-path "$cg/$id" -- cat
  track $id
  out=$(echo hi | rt run --bundle "$b" $id 2>"$work/$id.err")
  check "stdin: echo hi | run ... cat prints hi (got '$out')" test "$out" = hi
  id=stdin-big b=$work/stdin-big
  # A reader that starts late: the input backs up into the pipe, the vsock buffers and
  # the shim's socket, so EOF is sent while much of it is still in flight (a close that
  # overtook the data once cut the input short).
  bundle_make "$b" --cgroups-path "$cg/$id" -- sh -c 'sleep 2; md5sum'
  track $id
  head -c 8000000 /dev/urandom >"$work/blob"
  out=$(rt run --bundle "$b" $id <"$work/blob" 2>"$work/$id.err")
  want=$(md5sum <"$work/blob" | cut -d' ' -f1)
  check "stdin: 8 MB piped through arrive whole (md5 ${out%% *}, want $want)" \
    test "${out%% *}" = "$want"
  untrack
  check_clean stdin stdin stdin-big
}

case_run_signal() {
  local id=runsig b=$work/runsig rc run_pid
  bundle_make "$b" --cgroups-path "$cg/$id" -- sleep 1000
  track $id
  rt run --bundle "$b" $id </dev/null >"$work/$id.out" 2>"$work/$id.err" &
  run_pid=$!
  wait_status $id running 60
  check "run: the container runs in the foreground" test $? = 0
  rt kill $id KILL
  wait $run_pid
  rc=$?
  check "run: a process killed by SIGKILL gives run 128+9 (got $rc)" test $rc = 137
  id=rundetach
  bundle_make "$work/$id" --cgroups-path "$cg/$id" -- sleep 1000
  track $id
  rt run --detach --bundle "$work/$id" $id </dev/null >"$work/$id.out" 2>"$work/$id.err"
  check "run --detach: exits 0 and the container runs" \
    eval "test $? = 0 && test \"\$(status_of $id)\" = running"
  delete_all
  check_clean "run (signal, --detach)" runsig rundetach
}

case_misc() {
  local out
  out=$("$RUNTIME" --version 2>&1)
  check "--version: exits 0 and names a version ($(head -n 1 <<<"$out"))" \
    eval '[[ $out == *version* ]]'
  check "features: JSON with ociVersionMin and ociVersionMax" \
    jqe '(.ociVersionMin | length > 0) and (.ociVersionMax | length > 0)' < <(rt features 2>/dev/null)
  mkdir -p "$work/spec"
  (cd "$work/spec" && rt spec) </dev/null >/dev/null 2>&1
  check "spec: writes a config.json with a process and a root" \
    jqe '(.process.args | length > 0) and (.root.path | length > 0)' "$work/spec/config.json"
  (cd "$work/spec" && rt spec) </dev/null >/dev/null 2>&1
  check "spec: refuses to overwrite an existing config.json" test $? != 0
  if [[ -n $IS_RUNV ]]; then
    local rc
    out=$(rt check 2>&1)
    rc=$?
    check "check: runv can run sandboxes in the box (exit $rc: $(grep -v '^ok' <<<"$out" | tr '\n' ' '))" \
      eval '[[ $rc == 0 && $out == *"ok    kvm "*"KVM API 12"* && $out != *FAIL* ]]'
  fi
}

# vmm_pids: the runv-vmm processes among the suite's descendants.
vmm_pids() {
  descendants >"$work/vmm.ps"
  awk '{ split($2, a, "/"); if (a[length(a)] == "runv-vmm") print $1 }' "$work/vmm.ps"
}

# runv only: an agent that does not answer (its VMM stopped with SIGSTOP).
case_wedged() {
  local id=wedged-kill vmm
  running $id -- sleep 1000
  vmm=$(vmm_pids)
  # runv-vmm runs jailed: the process runv started (the jail's supervisor) and the VMM,
  # its child in a PID namespace of its own. Both are stopped.
  check "wedged: the sandbox has one runv-vmm, jailed under its supervisor ($vmm)" \
    bash -c '[[ $(wc -w <<<"$1") == 2 ]] && pgrep -P "${1%%[[:space:]]*}" -x runv-vmm >/dev/null' _ "$vmm"
  kill -STOP $vmm
  rt kill $id 9
  check "wedged: kill ID 9 exits 0 while the VMM is stopped" test $? = 0
  check "wedged: then the state is stopped" wait_status $id stopped 60
  rt delete $id
  check "wedged: delete exits 0" test $? = 0
  untrack
  check_clean "wedged kill" $id
  id=wedged-delete
  running $id -- sleep 1000
  vmm=$(vmm_pids)
  kill -STOP $vmm
  rt delete --force $id
  check "wedged: delete --force exits 0 while the VMM is stopped" test $? = 0
  fails_with "wedged: the container is gone" 'does not exist' rt state $id
  untrack
  check_clean "wedged delete --force" $id
}

case_tty() {
  local id=tty b=$work/tty sock=$work/tty.sock out
  bundle_make "$b" --tty --cgroups-path "$cg/$id" -- sh
  console_start "$sock" shell "$work/tty.transcript"
  # As containerd's runc shim does for a terminal: create's stdout and stderr are one
  # pipe read to EOF, which only comes when nothing runv left behind holds it.
  # (The pipe is read by cat, which the time limit kills with its process group.)
  track $id
  out=$(timeout -k 5 "$T" bash -c '"$@" </dev/null 2>&1 | cat; exit "${PIPESTATUS[0]}"' _ \
    "$RUNTIME" --root "$root" create --bundle "$b" --console-socket "$sock" $id)
  check "tty: create with --console-socket exits 0 and its output pipe ends (exit $?: $out)" \
    test $? = 0
  rt start $id
  timeout 150 tail --pid="$console_pid" -f /dev/null
  wait "$console_pid"
  check "tty: the PTY master came over the socket; a command ran; a resize reached stty size" test $? = 0
  check "tty: the shell's exit stops the container" wait_status $id stopped 30
  [[ $(status_of $id) == stopped ]] || show "$work/tty.transcript.log" "$work/tty.transcript" "$work/$id.err"
  delete_all
  check_clean tty $id
}

# gone_in_container ID PATTERN SECS: polls until no live process in the container (ps
# inside it, zombies aside) matches PATTERN.
gone_in_container() {
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    rt exec "$1" ps -o stat,args 2>/dev/null | grep -v '^Z' | grep -q -- "$2" || return 0
    sleep 0.5
  done
  return 1
}

case_exec() {
  local id=exec rc out
  running $id -- sleep 1000
  check "exec: the container runs" test $? = 0
  rt exec $id sh -c 'echo exec-out; echo exec-err >&2; exit 5' </dev/null >"$work/exec.out" 2>"$work/exec.err"
  rc=$?
  check "exec: exit code 5 is exec's own (got $rc)" test $rc = 5
  check "exec: stdout and stderr separated" \
    eval "test \"\$(cat '$work/exec.out')\" = exec-out && grep -qx exec-err '$work/exec.err'"
  check "exec: the container is still running after the exec ended" test "$(status_of $id)" = running
  out=$(rt exec $id ps -o pid,args 2>&1)
  check "exec: sees the container's processes (sleep 1000 as PID 1)" grep -Eq '^ *1 +sleep 1000' <<<"$out"
  out=$(rt exec --env E2E=yes --cwd /tmp $id sh -c 'echo "$E2E $(pwd) $(hostname)"' 2>&1)
  check "exec: --env, --cwd and the container's hostname (got '$out')" test "$out" = "yes /tmp $id"
  out=$(rt exec --user 65534:65534 $id id -u 2>&1)
  check "exec: --user 65534 (got '$out')" test "$out" = 65534
  jq '.process | .args = ["sh", "-c", "echo from-process-file"] | .terminal = false' \
    "$work/$id/config.json" >"$work/process.json"
  out=$(rt exec --process "$work/process.json" $id 2>&1)
  check "exec: --process FILE (got '$out')" test "$out" = from-process-file
  out=$(echo piped | rt exec $id cat 2>&1)
  check "exec: stdin reaches the exec'd process (got '$out')" test "$out" = piped
  console_start "$work/exec-tty.sock" drain "$work/exec-tty.transcript"
  rt exec --tty --detach --console-socket "$work/exec-tty.sock" --pid-file "$work/exec-tty.pid" $id \
    sh -c 'tty; stty size; echo exec-tty-done' </dev/null >/dev/null 2>"$work/exec-tty.err"
  check "exec: --tty --detach --console-socket --pid-file exits 0" test $? = 0
  check "exec: --pid-file written" test -s "$work/exec-tty.pid"
  timeout 60 tail --pid="$console_pid" -f /dev/null
  wait "$console_pid"
  check "exec: --tty output came through the console socket's PTY (receiver exit $?)" \
    eval "grep -q '^/dev/pts/' '$work/exec-tty.transcript' && grep -q exec-tty-done '$work/exec-tty.transcript'"
  grep -q exec-tty-done "$work/exec-tty.transcript" 2>/dev/null ||
    show "$work/exec-tty.transcript.log" "$work/exec-tty.err"
  rt exec $id sh -c 'kill -9 $$' </dev/null >/dev/null 2>&1
  rc=$?
  check "exec: a process killed by SIGKILL gives exec 128+9 (got $rc)" test $rc = 137
  rt exec --detach --pid-file "$work/exec-bg.pid" $id sleep 999 </dev/null >/dev/null 2>&1
  check "exec --detach: the process runs in the container" \
    eval "rt exec $id ps -o stat,args | grep -v '^Z' | grep -q 'sleep 999'"
  kill -9 "$(cat "$work/exec-bg.pid" 2>/dev/null)" 2>/dev/null
  check "exec --detach: SIGKILL of its --pid-file process ends the process in the container" \
    gone_in_container $id 'sleep 999' 30
  rt kill $id KILL && wait_status $id stopped 30
  fails_with "exec: into a stopped container fails" . rt exec $id true
  delete_all
  check_clean exec $id
}

case_kill() {
  local id=killterm
  running $id -- sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
  check "kill: a container that traps TERM runs" test $? = 0
  rt kill $id TERM
  check "kill: TERM (by name) exits 0" test $? = 0
  check "kill: the trapping container stops after TERM" wait_status $id stopped 30
  delete_all
  id=killkill
  running $id -- sleep 1000
  check "kill: a container without a TERM handler runs" test $? = 0
  rt kill $id 15
  check "kill: 15 (by number) exits 0" test $? = 0
  sleep 2
  check "kill: PID 1 without a handler ignores TERM: still running" test "$(status_of $id)" = running
  rt kill $id SIGKILL
  check "kill: SIGKILL exits 0" test $? = 0
  check "kill: the container stops after SIGKILL" wait_status $id stopped 30
  delete_all
  id=killpid
  bundle_make "$work/$id" --cgroups-path "$cg/$id" -- sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
  create $id "$work/$id" --pid-file "$work/$id.pid" && rt start $id && wait_status $id running 30
  check "kill: a container created with --pid-file runs" test $? = 0
  kill -TERM "$(cat "$work/$id.pid")"
  check "kill: TERM sent to the --pid-file process reaches the container's process" \
    wait_status $id stopped 30
  delete_all
  check_clean kill killterm killkill killpid
}

case_hook() {
  local id=hook b=$work/hook pid
  bundle_make "$b" --cgroups-path "$cg/$id" --prestart "cat >'$work/hook.json'" -- sleep 1000
  create $id "$b" && rt start $id && wait_status $id running 30
  check "hook: the container with a prestart hook runs" test $? = 0
  check "hook: the hook ran on the host and wrote $work/hook.json" test -s "$work/hook.json"
  pid=$(state_of $id | jq -r .pid)
  check "hook: the hook's stdin state has the id and the pid ($pid)" \
    jqe --arg id $id --argjson pid "${pid:-0}" '.id == $id and .pid == $pid and .pid > 0' "$work/hook.json"
  [[ -s $work/hook.json ]] && echo "#   hook state: $(cat "$work/hook.json")"
  delete_all
  check_clean hook $id
}

case_delete_force() {
  local id=forced
  running $id -- sleep 1000
  check "delete --force: the container runs" test $? = 0
  rt delete --force $id
  check "delete --force: exits 0 on a running container" test $? = 0
  fails_with "delete --force: the container is gone" 'does not exist' rt state $id
  untrack
  check_clean "delete --force" $id
}

case_two() {
  running two-a -- sleep 1000 && running two-b -- sleep 1000
  check "two containers: both run at once" \
    eval 'test "$(status_of two-a)" = running && test "$(status_of two-b)" = running'
  check "two containers: each has its own hostname" \
    eval 'test "$(rt exec two-a hostname)" = two-a && test "$(rt exec two-b hostname)" = two-b'
  rt kill two-a KILL && wait_status two-a stopped 30
  check "two containers: killing one leaves the other running" test "$(status_of two-b)" = running
  delete_all
  check_clean "two containers" two-a two-b
}

case_pause() {
  local id=pause
  running $id -- sleep 1000
  check "pause: the container runs" test $? = 0
  rt pause $id
  check "pause: pause exits 0" test $? = 0
  check "pause: state says paused" test "$(status_of $id)" = paused
  rt resume $id
  check "resume: resume exits 0" test $? = 0
  check "resume: state says running" test "$(status_of $id)" = running
  check "resume: the container works after resume" test "$(rt exec $id echo alive 2>&1)" = alive
  delete_all
  check_clean pause $id
}

case_ps_list_events() {
  local id=inspect out
  running $id -- sh -c 'sleep 1000 & sleep 1001'
  check "ps/list/events: the container runs" test $? = 0
  out=$(rt ps $id 2>&1)
  check "ps: table with a PID column and the container's sleep" \
    eval 'head -n 1 <<<"$out" | grep -qw PID && grep -q "sleep 100[01]" <<<"$out"'
  check "ps --format json: a non-empty array of pids" \
    jqe 'type == "array" and length > 0 and all(.[]; type == "number")' < <(rt ps --format json $id)
  out=$(rt list 2>&1)
  check "list: table with ID and STATUS and the running container" \
    eval 'head -n 1 <<<"$out" | grep -q "ID.*STATUS" && grep -Eq "^$id +[0-9]+ +running" <<<"$out"'
  check "list -q: the ids only" test "$(rt list -q 2>&1)" = $id
  check "list --format json: id, pid, status, bundle" jqe --arg id $id \
    'any(.[]; .id == $id and .status == "running" and .pid > 0 and (.bundle | length > 0))' < <(rt list --format json)
  out=$(timeout 60 "$RUNTIME" --root "$root" events --stats $id 2>&1)
  if [[ $? != 0 ]] && grep -Eqi 'not (yet )?(supported|implemented)|unsupported|unknown' <<<"$out"; then
    ok "events --stats # SKIP the runtime does not support it: $out"
  else
    check "events --stats: one stats sample for the container" \
      jqe --arg id $id '.type == "stats" and .id == $id and (.data | type == "object")' <<<"$out"
  fi
  rt update --pids-limit 42 $id
  check "update --pids-limit 42 exits 0" test $? = 0
  # pids.max of the container's own cgroup: cgroup v2 without a cgroup namespace shows the
  # whole hierarchy (the path is in /proc/self/cgroup), with one or on v1 it is at the top.
  out=$(rt exec $id sh -c 'p=$(sed -n "s/^0:://p" /proc/self/cgroup)
    for f in "/sys/fs/cgroup$p/pids.max" /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do
      [ -f "$f" ] && exec cat "$f"
    done' 2>&1)
  check "update: the container's pids.max is 42 (got '$out')" test "$out" = 42
  delete_all
  check_clean "ps/list/events/update" $id
}

# Error cases: each on a fresh --root, which must hold nothing afterwards.
case_errors() {
  local root=$work/eroot-unknown verb
  for verb in state start delete pause resume ps; do
    fails_with "unknown id: $verb says 'does not exist'" 'does not exist' rt $verb nope
  done
  fails_with "unknown id: kill says 'does not exist'" 'does not exist' rt kill nope KILL
  fails_with "unknown id: exec says 'does not exist'" 'does not exist' rt exec nope true
  check "unknown id: nothing under --root" test -z "$(find "$root" -mindepth 1 2>/dev/null)"
  check_clean "unknown id" nope

  root=$work/eroot-dup
  local pid
  running dup -- sleep 1000
  pid=$(state_of dup | jq -r .pid)
  bundle_make "$work/dup2" --cgroups-path "$cg/dup2" -- sleep 1000
  fails_with "duplicate id: create says it exists" 'exist' rt create --bundle "$work/dup2" dup
  check "duplicate id: the first container still runs with its pid" \
    test "$(state_of dup | jq -r '"\(.status) \(.pid)"')" = "running $pid"
  check "duplicate id: --root holds only the first container" test "$(ls -A "$root")" = dup
  delete_all
  check_clean "duplicate id" dup dup2

  root=$work/eroot-bundle
  track badbundle
  fails_with "bad bundle path: create fails naming the path" "$work/no-such-bundle" \
    rt create --bundle "$work/no-such-bundle" badbundle
  check "bad bundle path: nothing under --root" test -z "$(find "$root" -mindepth 1 2>/dev/null)"
  check_clean "bad bundle path" badbundle

  root=$work/eroot-json
  track badjson
  mkdir -p "$work/badjson" && bundle_rootfs "$work/badjson"
  echo '{ "ociVersion": "1.0.2", not json' >"$work/badjson/config.json"
  fails_with "invalid config.json: create fails with a message" '.' \
    rt create --bundle "$work/badjson" badjson
  check "invalid config.json: nothing under --root" test -z "$(find "$root" -mindepth 1 2>/dev/null)"
  check_clean "invalid config.json" badjson

  root=$work/eroot-log
  track logjson
  rt --log "$work/log.json" --log-format json create --bundle "$work/no-such-bundle" logjson \
    </dev/null >/dev/null 2>&1
  check "--log-format json: the error is a JSON line with level error, msg and time" \
    jqe -s 'any(.[]; .level == "error" and (.msg | length > 0) and (.time | length > 0))' "$work/log.json"
  check_clean "--log json" logjson

  if [[ -n $IS_RUNV ]]; then
    root=$work/eroot-kernel
    track nokernel
    bundle_make "$work/nokernel" --cgroups-path "$cg/nokernel" -- true
    fails_with "missing guest kernel: create fails naming the kernel path" "$work/no-such-vmlinux" \
      env RUNV_KERNEL="$work/no-such-vmlinux" RUNV_GUEST_KERNEL="$work/no-such-vmlinux" \
      timeout -k 5 "$T" "$RUNTIME" --root "$root" create --bundle "$work/nokernel" nokernel
    check "missing guest kernel: nothing under --root" test -z "$(find "$root" -mindepth 1 2>/dev/null)"
    check_clean "missing guest kernel" nokernel
  fi
}

# run_case FUNCTION: runs a case in a subshell; one that overruns CASE_TIMEOUT seconds
# (default 6 * RT_TIMEOUT) is a failure, and it and everything it started is killed.
run_case() {
  local pid wd budget=${CASE_TIMEOUT:-$((6 * T))}
  rm -f "$work/case.done" "$work/case.overran"
  ("$1") &
  pid=$!
  (
    for ((i = 0; i < budget * 2; i++)); do
      [[ -e $work/case.done ]] && exit 0
      sleep 0.5
    done
    touch "$work/case.overran"
    descendants >"$work/overran"
    awk '{print $1}' "$work/overran" | while read -r p; do kill -9 "$p" 2>/dev/null; done
  ) &
  wd=$!
  echo $wd >"$work/keep"
  wait $pid
  touch "$work/case.done"
  wait $wd
  : >"$work/keep"
  if [[ -e $work/case.overran ]]; then
    not_ok "$1: did not finish within $budget s; killed with all it started"
    show "$work/overran"
  fi
  delete_all
}

cases="lifecycle run_exit_code run_signal stdin tty exec kill hook delete_force two pause
  ps_list_events misc ${IS_RUNV:+wedged} errors"
for c in ${RUNTIME_CASES:-$cases}; do
  run_case "case_$c"
done
finish
