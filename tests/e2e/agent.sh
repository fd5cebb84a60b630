#!/usr/bin/env bash
# The agent's container suite over vsock, with runv-agent as the guest's PID 1. Run inside
# tests/kvmbox: needs runv-vmm on PATH (or RUNV_VMM), RUNV_GUEST_KERNEL, RUNV_AGENT_INITRD
# (tests/initramfs/build.sh with the static agent, agent/build.sh, as /init) and
# RUNV_AGENT_SUITES: the compiled test binaries of agent/tests (containers, cgroups), the
# same ones `cargo test` runs against a host-mode agent. The rootfs reaches the guest
# through a virtio-fs share tagged runv; the suite's client talks to the guest agent
# through the VMM's hybrid vsock socket.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../lib.sh"

: "${RUNV_GUEST_KERNEL:?set RUNV_GUEST_KERNEL to the guest vmlinux}"
: "${RUNV_AGENT_INITRD:?set RUNV_AGENT_INITRD to the agent initramfs}"
: "${RUNV_AGENT_SUITES:?set RUNV_AGENT_SUITES to the agent suite binaries}"
VMM=${RUNV_VMM:-runv-vmm}
VM_TIMEOUT=${VM_TIMEOUT:-600}
# The guest command line is runv-vmm's own (--print-cmdline), plus the extra words.
CMDLINE=$("$VMM" --print-cmdline --cmdline-append "${AGENT_CMDLINE_EXTRA:-}")
work=$(mktemp -d)
vmm=
trap '[[ -n $vmm ]] && kill "$vmm" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/share"
uds=$work/vsock.sock

timeout "$VM_TIMEOUT" "$VMM" --kernel "$RUNV_GUEST_KERNEL" --initrd "$RUNV_AGENT_INITRD" \
  --cmdline "$CMDLINE" --memory 512 --fs "tag=runv,path=$work/share" \
  --vsock "cid=3,uds=$uds" >"$work/vm.out" 2>"$work/vm.err" &
vmm=$!

# hybrid_call REQUEST_JSON: one request to the guest agent; prints the answer's JSON.
hybrid_call() {
  /usr/bin/python3 - "$uds" "$1" <<'PY'
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"CONNECT 1024\n")
line = b""
while not line.endswith(b"\n"):
    c = s.recv(1)
    if not c:
        sys.exit(1)
    line += c
if not line.startswith(b"OK "):
    sys.exit(1)
def send(obj):
    body = json.dumps(obj).encode()
    s.sendall(struct.pack(">I", len(body)) + body)
def recv():
    hdr = b""
    while len(hdr) < 4:
        c = s.recv(4 - len(hdr))
        if not c:
            sys.exit(1)
        hdr += c
    n = struct.unpack(">I", hdr)[0]
    body = b""
    while len(body) < n:
        c = s.recv(n - len(body))
        if not c:
            sys.exit(1)
        body += c
    return json.loads(body)
send({"type": "hello", "versions": [1], "software": "agent.sh"})
assert recv()["type"] == "welcome"
send({"id": 1, "request": json.loads(sys.argv[2])})
print(json.dumps(recv()))
PY
}

ready=
for _ in $(seq 1 $((VM_TIMEOUT * 2))); do
  if [[ -S $uds ]] && hybrid_call '{"type": "ping"}' >/dev/null 2>&1; then
    ready=1
    break
  fi
  kill -0 "$vmm" 2>/dev/null || break
  sleep 0.5
done
if [[ -n $ready ]]; then
  ok "guest agent answers ping over vsock"
else
  not_ok "guest agent answers ping over vsock"
  show "$work/vm.out" "$work/vm.err"
fi

if [[ -n $ready ]]; then
  for suite in $RUNV_AGENT_SUITES; do
    name=$(basename "$suite")
    # Tests run in parallel (concurrent creates are part of what is tested); a hung
    # suite is a failure here, never a stuck box. Every case runs: the root_ ones
    # (containers) and the kvm_ ones (cgroups) are ignored by a plain cargo test.
    RUNV_AGENT_TEST_VSOCK=$uds RUNV_AGENT_TEST_SHARE=$work/share \
      timeout "${SUITE_TIMEOUT:-600}" "$suite" --include-ignored \
      --test-threads="${SUITE_THREADS:-4}" >"$work/$name.out" 2>&1
    rc=$?
    [[ $rc == 124 ]] && not_ok "${name%%-*}: finished within ${SUITE_TIMEOUT:-600} s"
    # One test line per Rust test.
    while read -r line; do
      if [[ $line =~ ^test\ (.+)\ \.\.\.\ ok$ ]]; then
        ok "${name%%-*}: ${BASH_REMATCH[1]}"
      elif [[ $line =~ ^test\ (.+)\ \.\.\.\ FAILED$ ]]; then
        not_ok "${name%%-*}: ${BASH_REMATCH[1]}"
      fi
    done <"$work/$name.out"
    grep -q '^test result: ok' "$work/$name.out" || show "$work/$name.out" "$work/vm.out"
  done
  answer=$(hybrid_call '{"type": "shutdown"}' 2>&1)
  check "shutdown is answered ok ($answer)" grep -q '"ok"' <<<"$answer"
fi

wait "$vmm"
rc=$?
vmm=
check "the VM powered off cleanly after shutdown (runv-vmm exit $rc)" test "$rc" = 0
[[ $rc == 0 ]] || show "$work/vm.out" "$work/vm.err"
finish
