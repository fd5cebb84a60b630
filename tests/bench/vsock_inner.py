"""vsock benchmark, inside tests/kvmbox (tests/bench/vsock.sh runs it). Per run, one
runv-vmm boot: guest-to-host throughput (one stream of BYTES, timed on the host from
accept to EOF), host-to-guest throughput (BYTES to the guest's sink, timed from the
first byte to the guest's answer), and round trips of 1 byte to the guest's echo server.
Prints one line per run and the medians."""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

KERNEL = os.environ["RUNV_GUEST_KERNEL"]
INITRD = os.environ["RUNV_VSOCK_BENCH_INITRD"]
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
BYTES = (int(sys.argv[2]) if len(sys.argv) > 2 else 64) << 20
ROUND_TRIPS = 1000
CMDLINE = subprocess.check_output(["runv-vmm", "--print-cmdline", "--cmdline-append",
                                   f"runv.vsock_bytes={BYTES}"], text=True).strip()


def connect(uds, port, deadline):
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(uds)
            s.sendall(f"CONNECT {port}\n".encode())
            line = b""
            while not line.endswith(b"\n"):
                b = s.recv(1)
                if not b:
                    break
                line += b
            if line.startswith(b"OK "):
                return s
        except OSError:
            pass
        s.close()
        time.sleep(0.2)
    raise RuntimeError(f"guest port {port} never answered")


def one_run(work):
    uds = os.path.join(work, "v.sock")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(f"{uds}_5000")
    lst.listen(1)
    g2h = []

    def receive():
        conn, _ = lst.accept()
        t0, n = time.monotonic(), 0
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            n += len(b)
        g2h.append((n, time.monotonic() - t0))
        conn.sendall(b"n=0 crc=0\n")
        conn.close()

    th = threading.Thread(target=receive, daemon=True)
    th.start()
    vm = subprocess.Popen(["runv-vmm", "--kernel", KERNEL, "--initrd", INITRD, "--cmdline",
                           CMDLINE, "--memory", "256", "--vsock", f"cid=3,uds={uds}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        th.join(300)
        data = os.urandom(BYTES)
        s = connect(uds, 1234, deadline)
        t0 = time.monotonic()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.recv(100)
        h2g = time.monotonic() - t0
        s.close()
        s = connect(uds, 1236, deadline)
        rtts = []
        for _ in range(ROUND_TRIPS):
            t0 = time.monotonic()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("echo broke")
            rtts.append(time.monotonic() - t0)
        s.close()
        connect(uds, 1235, deadline).close()
        vm.wait(60)
    finally:
        if vm.poll() is None:
            vm.kill()
    n, secs = g2h[0]
    return n / secs / 1e6, BYTES / h2g / 1e6, statistics.median(rtts) * 1e6


def main():
    rows = []
    for i in range(RUNS):
        with tempfile.TemporaryDirectory() as work:
            g2h, h2g, rtt = one_run(work)
        rows.append((g2h, h2g, rtt))
        print(f"run {i + 1}: guest->host {g2h:.1f} MB/s, host->guest {h2g:.1f} MB/s, "
              f"round trip median {rtt:.0f} us", flush=True)
    med = [statistics.median(c) for c in zip(*rows)]
    print(f"median of {RUNS} ({BYTES >> 20} MiB per stream, {ROUND_TRIPS} round trips): "
          f"guest->host {med[0]:.1f} MB/s, host->guest {med[1]:.1f} MB/s, "
          f"round trip {med[2]:.0f} us")


if __name__ == "__main__":
    main()
