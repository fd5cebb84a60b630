"""Host side of the vsock end-to-end test (run by tests/e2e/vsock.sh).

Boots runv-vmm with --vsock and the guest of tests/initramfs/vsock-init.sh, then checks:
guest-initiated streams (one big, 50 at once) reach Unix listeners at <uds>_<port> with
intact bytes; host-initiated streams (CONNECT/OK) carry bytes to the guest and its answer
back; an unknown guest port is refused; a guest that sends to a host reader that stops
reading is stalled without the VMM's memory growing; the VM powers off cleanly and the
socket file is gone afterwards. Prints TAP-like lines and "N passed, N failed".
"""

import os
import socket
import subprocess
import sys
import threading
import time
import zlib

KERNEL = os.environ["RUNV_GUEST_KERNEL"]
INITRD = os.environ["RUNV_VSOCK_INITRD"]
VMM = os.environ.get("RUNV_VMM", "runv-vmm")
BYTES = int(os.environ.get("VSOCK_BYTES", str(64 << 20)))
TIMEOUT = float(os.environ.get("VM_TIMEOUT", "300"))
# runv-vmm's own command line, plus the test's size.
CMDLINE = subprocess.check_output([VMM, "--print-cmdline", "--cmdline-append",
                                   f"runv.vsock_bytes={BYTES}"], text=True).strip()

passed = failed = 0
VM = None


def check(desc, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok - {desc}", flush=True)
    else:
        failed += 1
        print(f"not ok - {desc}" + (f" ({detail})" if detail else ""), flush=True)


def read_all(conn):
    crc, n = 0, 0
    while True:
        b = conn.recv(1 << 16)
        if not b:
            return n, crc
        n += len(b)
        crc = zlib.crc32(b, crc)


def crc_server(listener, count, results):
    """Accepts `count` streams; each is read to EOF and answered with its length and CRC."""
    def one(conn):
        with conn:
            n, crc = read_all(conn)
            conn.sendall(f"n={n} crc={crc:08x}\n".encode())
            results.append((n, crc))
    threads = []
    for _ in range(count):
        conn, _ = listener.accept()
        t = threading.Thread(target=one, args=(conn,), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(128)
    return s


def host_connect(uds, port, deadline):
    """CONNECT to a guest port; returns (socket, OK line) or (None, what happened)."""
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            s.connect(uds)
            s.sendall(f"CONNECT {port}\n".encode())
            line = b""
            while not line.endswith(b"\n"):
                b = s.recv(1)
                if not b:
                    break
                line += b
        except OSError as e:
            line = repr(e).encode()
        if line.startswith(b"OK ") and line.endswith(b"\n"):
            return s, line.decode().strip()
        s.close()
        if time.monotonic() > deadline or (VM is not None and VM.poll() is not None):
            return None, line.decode(errors="replace")
        time.sleep(0.5)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def h2g(uds, data, deadline):
    s, ok = host_connect(uds, 1234, deadline)
    if s is None:
        return None, ok
    with s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            answer += b
    return answer.decode().strip(), ok


def main():
    work = sys.argv[1]
    uds = os.path.join(work, "v.sock")
    big, par, hog = (listen(f"{uds}_{p}") for p in (5000, 5001, 5002))
    big_res, par_res = [], []
    threading.Thread(target=crc_server, args=(big, 1, big_res), daemon=True).start()
    par_done = threading.Thread(target=crc_server, args=(par, 50, par_res), daemon=True)
    par_done.start()
    hog_conn = []
    threading.Thread(target=lambda: hog_conn.append(hog.accept()[0]), daemon=True).start()

    out = open(os.path.join(work, "out"), "wb")
    err = open(os.path.join(work, "err"), "wb")
    vm = subprocess.Popen([VMM, "--kernel", KERNEL, "--initrd", INITRD, "--cmdline", CMDLINE,
                           "--memory", "256", "--vsock", f"cid=3,uds={uds}"],
                          stdout=out, stderr=err)
    global VM
    VM = vm
    deadline = time.monotonic() + TIMEOUT
    try:
        run_checks(vm, uds, deadline, big_res, par_done, par_res, hog_conn)
    finally:
        if vm.poll() is None:
            vm.kill()
            vm.wait()
    rc = vm.returncode
    check("the VM powered off cleanly (exit 0)", rc == 0, f"exit {rc}")
    check("the vsock socket file is removed at exit", not os.path.exists(uds))
    console = open(os.path.join(work, "out"), "rb").read().decode(errors="replace")
    lines = {l.split(" ", 1)[0]: l for l in console.splitlines() if l.startswith("VSOCK-")}
    g2h = lines.get("VSOCK-G2H", "")
    sent, _, got = g2h.partition(" got ")
    check(f"guest-initiated {BYTES} bytes arrived intact ({g2h})",
          sent == f"VSOCK-G2H sent {got}" and f"n={BYTES} " in got)
    check("50 concurrent guest-initiated streams arrived intact",
          lines.get("VSOCK-G2H-PARALLEL") == "VSOCK-G2H-PARALLEL good=50",
          lines.get("VSOCK-G2H-PARALLEL"))
    check("the hog was stalled, never finished", "done" not in lines.get("VSOCK-HOG-LAST", ""),
          lines.get("VSOCK-HOG-LAST"))
    if failed:
        sys.stdout.write("# console:\n" + "".join(f"#   {l}\n" for l in console.splitlines()[-40:]))
        sys.stdout.write("# stderr:\n" + "".join(
            f"#   {l}\n" for l in open(os.path.join(work, "err")).read().splitlines()[-20:]))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def run_checks(vm, uds, deadline, big_res, par_done, par_res, hog_conn):
    data = os.urandom(BYTES)
    answer, ok = h2g(uds, data, deadline)
    check(f"host-initiated stream: OK line ({ok})", answer is not None and ok.startswith("OK "))
    check(f"host-initiated {BYTES} bytes arrived intact ({answer})",
          answer == f"n={BYTES} crc={zlib.crc32(data):08x}")

    results = [None] * 50
    def small(i):
        d = os.urandom(65536)
        a, _ = h2g(uds, d, deadline)
        results[i] = a == f"n=65536 crc={zlib.crc32(d):08x}"
    ts = [threading.Thread(target=small, args=(i,)) for i in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check("50 concurrent host-initiated streams carried their bytes",
          all(results), f"{results.count(True)} of 50")

    s, line = host_connect(uds, 4321, time.monotonic() + 3)
    check(f"CONNECT to a guest port nobody listens on is refused ({line!r})", s is None)

    while par_done.is_alive() and time.monotonic() < deadline and vm.poll() is None:
        par_done.join(0.2)
    check("the host's listener got 50 parallel guest streams", len(par_res) == 50,
          f"{len(par_res)}")
    check("the host's listener got the big guest stream", big_res and big_res[0][0] == BYTES,
          f"{big_res}")

    # Backpressure: the hog's reader never reads. Let the guest push, then compare RSS.
    while not hog_conn and time.monotonic() < deadline and vm.poll() is None:
        time.sleep(0.05)
    before = rss_kib(vm.pid)
    time.sleep(10)
    after = rss_kib(vm.pid)
    check(f"a host reader that stops reading does not grow the VMM ({before} -> {after} KiB)",
          hog_conn and after - before < 16 * 1024)

    s, _ = host_connect(uds, 1235, deadline)
    if s is not None:
        s.close()
    try:
        vm.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    sys.exit(main())
