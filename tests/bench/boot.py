#!/usr/bin/env python3
"""Boot benchmark: process start to the guest's first userspace marker, runv-vmm against
QEMU microvm, alternating, on the same kernel, initramfs, command line and console; then
the VMM's own memory (Rss of every mapping but guest RAM) with the guest idle.

Run inside tests/kvmbox (see boot.sh). Prints a table and the ratios; never asserts a time.
"""
import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time

# runv-vmm's own command line: QEMU gets the same one.
CMDLINE = subprocess.check_output(["runv-vmm", "--print-cmdline"], text=True).strip()
MARKER = b"RUNV-INIT"


def runv_cmd(kernel, initrd, mem, cmdline):
    return ["runv-vmm", "--kernel", kernel, "--initrd", initrd, "--cpus", "1",
            "--memory", str(mem), "--cmdline", cmdline]


def qemu_cmd(kernel, initrd, mem, cmdline):
    return ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off,isa-serial=on",
            "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", str(mem),
            "-nodefaults", "-no-user-config", "-nographic", "-display", "none",
            "-serial", "stdio", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline]


def time_to_marker(cmd, timeout):
    """Seconds from spawning cmd until MARKER appears on its stdout."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    buf = b""
    elapsed = None
    try:
        while time.monotonic() - t0 < timeout:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if not r:
                if p.poll() is not None:
                    break
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            if MARKER in buf:
                elapsed = time.monotonic() - t0
                break
        # The guest powers off right after the marker; give it a moment, then insist.
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return elapsed


def overhead_kib(cmd, guest_mib, settle):
    """Rss (KiB) of all mappings of the VMM except the guest RAM, with the guest idle."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        buf = b""
        deadline = time.monotonic() + 120
        while MARKER not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
        if MARKER not in buf:
            return None, None
        time.sleep(settle)
        total = guest = 0
        size_kib = 0
        with open(f"/proc/{p.pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if parts[0] == "Size:":
                    size_kib = int(parts[1])
                elif parts[0] == "Rss:":
                    rss = int(parts[1])
                    # Guest RAM: the anonymous mapping of exactly the VM's memory size.
                    if size_kib == guest_mib * 1024:
                        guest += rss
                    else:
                        total += rss
        return total, guest
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default=os.environ.get("RUNV_GUEST_KERNEL"))
    ap.add_argument("--initrd", default=os.environ.get("RUNV_MARKER_INITRD"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    if not a.kernel or not a.initrd:
        sys.exit("need --kernel and --initrd (or RUNV_GUEST_KERNEL / RUNV_MARKER_INITRD)")

    vmms = {"runv-vmm": runv_cmd, "qemu-microvm": qemu_cmd}
    times = {name: [] for name in vmms}
    for i in range(a.runs):
        for name, mk in vmms.items():  # alternate, so drift hits both alike
            t = time_to_marker(mk(a.kernel, a.initrd, a.memory, CMDLINE), a.timeout)
            times[name].append(t)
            print(f"run {i + 1} {name}: {'%.3f s' % t if t is not None else 'no marker'}",
                  flush=True)

    print()
    print(f"{'VMM':<14} {'min s':>8} {'median s':>9} {'runs ok':>8}")
    summary = {}
    for name, ts in times.items():
        ok = [t for t in ts if t is not None]
        if ok:
            summary[name] = (min(ok), statistics.median(ok))
            print(f"{name:<14} {min(ok):8.3f} {statistics.median(ok):9.3f} {len(ok):>5}/{len(ts)}")
        else:
            print(f"{name:<14} {'-':>8} {'-':>9} {0:>5}/{len(ts)}")
    if len(summary) == 2:
        r_min = summary["runv-vmm"][0] / summary["qemu-microvm"][0]
        r_med = summary["runv-vmm"][1] / summary["qemu-microvm"][1]
        print(f"ratio runv-vmm/qemu-microvm: min {r_min:.2f}x, median {r_med:.2f}x")

    print()
    idle = CMDLINE + " runv.test=idle"
    for name, mk in vmms.items():
        other, guest = overhead_kib(mk(a.kernel, a.initrd, a.memory, idle), a.memory, 2.0)
        if other is None:
            print(f"{name}: guest did not reach its marker; no overhead figure")
        else:
            print(f"{name}: VMM overhead (Rss outside guest RAM) {other / 1024:.1f} MiB; "
                  f"guest RAM touched {guest / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
