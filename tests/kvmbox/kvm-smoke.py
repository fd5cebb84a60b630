#!/usr/bin/env python3
"""Smoke test for /dev/kvm, used by selftest.sh inside the box.

Checks KVM_GET_API_VERSION == 12 and KVM_CREATE_VM, then runs a 5-byte
real-mode guest (`mov al, 0x42; out 0x10, al; hlt`) and expects an I/O exit
carrying 0x42 followed by a HLT exit. Prints one line per step; exits
non-zero on the first failure.
"""
import ctypes
import fcntl
import mmap
import os
import struct
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5


def main():
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    api = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
    print(f"api_version={api}")
    if api != 12:
        return 1
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    print(f"create_vm=ok fd={vm}")
    if len(sys.argv) > 1 and sys.argv[1] == "--no-run":
        return 0

    mem = mmap.mmap(-1, 0x10000, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mem[0x1000:0x1005] = bytes([0xB0, 0x42, 0xE6, 0x10, 0xF4])
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0, 0x10000, addr))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run = mmap.mmap(vcpu, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
    struct.pack_into("Q", sregs, 0, 0)  # cs.base
    struct.pack_into("H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16], regs[17] = 0x1000, 0x2  # rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("18Q", *regs))

    fcntl.ioctl(vcpu, KVM_RUN, 0)
    reason = struct.unpack_from("I", run, 8)[0]
    if reason != KVM_EXIT_IO:
        print(f"run: exit reason {reason}, expected {KVM_EXIT_IO} (io)")
        return 1
    _direction, _size, port, _count, data_offset = struct.unpack_from("BBHIQ", run, 32)
    value = run[data_offset]
    print(f"run: io exit port={port:#x} value={value:#x}")
    if (port, value) != (0x10, 0x42):
        return 1
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    reason = struct.unpack_from("I", run, 8)[0]
    print(f"run: exit reason {reason} ({'hlt' if reason == KVM_EXIT_HLT else 'unexpected'})")
    return 0 if reason == KVM_EXIT_HLT else 1


if __name__ == "__main__":
    sys.exit(main())
