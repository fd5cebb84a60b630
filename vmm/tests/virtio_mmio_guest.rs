//! A guest of our own, a few hundred bytes of real-mode code on the host's /dev/kvm,
//! drives virtio-blk through real MMIO exits and KVM's ioeventfd: it checks MagicValue,
//! notifies before set-up and with a value that is no queue index, sets DRIVER_OK out of
//! order, offers a queue outside guest RAM (the device must show DEVICE_NEEDS_RESET),
//! resets, sets up a valid queue and submits a descriptor loop, then waits for the
//! device to return that chain and checks the device is still healthy. It powers off when
//! every check passed and resets the machine otherwise. Source:
//! `vmm/tests/guest/virtio_blk_hostile.s`.
//!
//! The window at 0xd000_0000 is beyond real mode's reach, so the test gives DS a 4 GiB
//! limit ("unreal mode") through KVM_SET_SREGS.
//!
//! The second half runs one hostile sequence against each device type (blk, vsock, fs),
//! each alone in its own VM: a 105-byte guest (`vmm/tests/guest/script_runner.s`) executes
//! a list of register writes, RAM writes and bounded polls composed by [`hostile_script`]
//! and logs what it observes into its RAM; the test checks that log after the guest
//! powered off. The sequence: notifications before set-up (matching the ioeventfds and
//! not), DRIVER_OK out of order, FEATURES_OK without VERSION_1, queue set-ups the device
//! must refuse with DEVICE_NEEDS_RESET (rings outside RAM, above 4 GiB, across the end of
//! RAM, misaligned; sizes 0x10000, 3, 0x8000), hostile chains (loops, addresses outside
//! RAM, a huge length, wrong directions, zero length, a next index outside the table,
//! bad indirect tables, junk content) that must all come back used with the device still
//! healthy, an avail index 0x8000 ahead (DEVICE_NEEDS_RESET), avail entries naming no
//! descriptor, and after each breakage a reset and a well-formed request that must
//! complete (vsock: a guest connect that reaches a host listener; fs: FUSE_INIT; blk: a
//! sector read).

mod common;

use common::{kvm_vm, reg, vsock_hdr, F_INDIRECT, F_NEXT, F_WRITE, NEEDS_RESET, READY};
use runv_vmm::devices::serial::ConsoleOut;
use runv_vmm::devices::virtio::block::{Block, BlockConfig};
use runv_vmm::devices::virtio::fs::{Fs, FsConfig};
use runv_vmm::devices::virtio::mmio::{CONFIG_SPACE as CONFIG, QUEUE_NOTIFY};
use runv_vmm::devices::virtio::vsock::{Op, VsockDevice};
use runv_vmm::devices::virtio::VirtioDevice;
use runv_vmm::vm::Vm;
use runv_vmm::ExitReason;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

const CODE_ADDR: u64 = 0x1000;

/// `vmm/tests/guest/virtio_blk_hostile.s`, assembled.
const HOSTILE_BLK: &[u8] = &[
    0x66, 0xbb, 0x00, 0x00, 0x00, 0xd0, 0x67, 0x66, 0x8b, 0x03, 0x66, 0x3d, 0x76, 0x69, 0x72, 0x74,
    0x0f, 0x85, 0xff, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x50, 0x00, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7,
    0x43, 0x50, 0xff, 0xff, 0xff, 0xff, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x04, 0x00, 0x00, 0x00, 0xe8,
    0xe6, 0x00, 0x67, 0x66, 0xc7, 0x83, 0x80, 0x00, 0x00, 0x00, 0x00, 0xf0, 0xff, 0xff, 0x67, 0x66,
    0xc7, 0x43, 0x44, 0x01, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x0f, 0x00, 0x00, 0x00,
    0x67, 0x66, 0x8b, 0x43, 0x70, 0x66, 0xa9, 0x40, 0x00, 0x00, 0x00, 0x0f, 0x84, 0xb4, 0x00, 0xe8,
    0xb6, 0x00, 0x67, 0x66, 0xc7, 0x83, 0x80, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x67, 0x66,
    0xc7, 0x43, 0x44, 0x01, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x0f, 0x00, 0x00, 0x00,
    0x67, 0x66, 0x8b, 0x43, 0x70, 0x66, 0x83, 0xf8, 0x0f, 0x0f, 0x85, 0x86, 0x00, 0x66, 0xc7, 0x06,
    0x00, 0x80, 0x00, 0x90, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x04, 0x80, 0x00, 0x00, 0x00, 0x00, 0x66,
    0xc7, 0x06, 0x08, 0x80, 0x10, 0x00, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x0c, 0x80, 0x01, 0x00, 0x01,
    0x00, 0x66, 0xc7, 0x06, 0x10, 0x80, 0x00, 0x91, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x14, 0x80, 0x00,
    0x00, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x18, 0x80, 0x00, 0x02, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x1c,
    0x80, 0x03, 0x00, 0x00, 0x00, 0x66, 0xc7, 0x06, 0x00, 0x82, 0x00, 0x00, 0x01, 0x00, 0xc7, 0x06,
    0x04, 0x82, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x50, 0x00, 0x00, 0x00, 0x00, 0x66, 0xb9, 0x00,
    0x00, 0x00, 0x10, 0xa1, 0x02, 0x84, 0x83, 0xf8, 0x01, 0x74, 0x06, 0x66, 0x49, 0x75, 0xf4, 0xeb,
    0x12, 0x67, 0x66, 0x8b, 0x43, 0x70, 0x66, 0x83, 0xf8, 0x0f, 0x75, 0x07, 0xba, 0xc0, 0x03, 0xb0,
    0x34, 0xee, 0xf4, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x00, 0x00, 0x00,
    0x00, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x01, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x03,
    0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x24, 0x01, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43,
    0x20, 0x01, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x70, 0x0b, 0x00, 0x00, 0x00, 0x67, 0x66,
    0xc7, 0x43, 0x30, 0x00, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x43, 0x38, 0x10, 0x00, 0x00, 0x00,
    0x67, 0x66, 0xc7, 0x83, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x83,
    0x90, 0x00, 0x00, 0x00, 0x00, 0x82, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x83, 0x94, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x67, 0x66, 0xc7, 0x83, 0xa0, 0x00, 0x00, 0x00, 0x00, 0x84, 0x00, 0x00,
    0x67, 0x66, 0xc7, 0x83, 0xa4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc3,
];

#[test]
#[ignore = "needs /dev/kvm: a real-mode guest drives virtio-blk through MMIO exits"]
fn kvm_hostile_real_mode_driver_cannot_break_the_vmm() {
    let image = std::env::temp_dir().join(format!("runv-guest-hostile-{}.img", std::process::id()));
    std::fs::write(&image, vec![0u8; 64 * 1024]).unwrap();
    let cfg: BlockConfig = format!("path={}", image.display()).parse().unwrap();

    let mut vm = kvm_vm(64);
    vm.memory()
        .write_slice(HOSTILE_BLK, GuestAddress(CODE_ADDR))
        .unwrap();
    vm.add_legacy_devices(ConsoleOut::new(None)).unwrap();
    let slot = vm
        .add_virtio_device("virtio-blk hostile", Box::new(Block::new(&cfg).unwrap()))
        .unwrap();
    assert_eq!((slot.base, slot.gsi), (0xd000_0000, 5));
    vm.create_vcpus(1, None).unwrap();
    unreal_mode(&vm);
    let r = vm.run().unwrap();
    std::fs::remove_file(&image).unwrap();
    assert_eq!(
        r,
        ExitReason::PowerOff,
        "the guest's checks failed (it reset)"
    );
}

/// Starts vCPU 0 at [`CODE_ADDR`] in real mode with a 4 GiB DS limit ("unreal mode"), so
/// the guest reaches the device windows at 0xd000_0000.
fn unreal_mode(vm: &Vm) {
    common::unreal_mode(vm.vcpu_fd(0).unwrap(), CODE_ADDR, 0x8000 - 0x100);
}

// ---------------------------------------------------------------------------------------
// The same hostile driver against every device type: a generic guest (a 105-byte script
// runner, `vmm/tests/guest/script_runner.s`) executes, instruction by instruction on the
// vCPU, a list of MMIO register writes, guest-RAM writes (rings, descriptors, requests)
// and polls that the test composes; it appends every value it observes to a log in guest
// RAM, and powers off at the end. The test then checks the log against what the device
// must have done. Each device runs in its own VM.
// ---------------------------------------------------------------------------------------

/// `vmm/tests/guest/script_runner.s`, assembled.
const SCRIPT_RUNNER: &[u8] = &[
    0x66, 0xbe, 0x00, 0x00, 0x04, 0x00, 0x66, 0xbf, 0x00, 0x90, 0x00, 0x00, 0x67, 0x66, 0x8b, 0x06,
    0x67, 0x66, 0x8b, 0x5e, 0x04, 0x67, 0x66, 0x8b, 0x4e, 0x08, 0x67, 0x66, 0x8b, 0x56, 0x0c, 0x66,
    0x83, 0xc6, 0x10, 0x3c, 0x01, 0x74, 0x13, 0x3c, 0x02, 0x74, 0x15, 0x3c, 0x03, 0x74, 0x2c, 0x3c,
    0x04, 0x74, 0x12, 0xba, 0xc0, 0x03, 0xb0, 0x34, 0xee, 0xf4, 0x67, 0x66, 0x89, 0x0b, 0xeb, 0xcc,
    0x67, 0x89, 0x0b, 0xeb, 0xc7, 0x66, 0xbd, 0x00, 0x00, 0x10, 0x00, 0x67, 0x66, 0x8b, 0x03, 0x66,
    0x21, 0xd0, 0x66, 0x39, 0xc8, 0x74, 0x04, 0x66, 0x4d, 0x75, 0xf0, 0x67, 0x66, 0x8b, 0x03, 0x67,
    0x66, 0x89, 0x07, 0x66, 0x83, 0xc7, 0x04, 0xeb, 0xa3,
];
/// Where the runner reads its ops and writes its log (see the .s file).
const SCRIPT_ADDR: u64 = 0x4_0000;
const LOG_ADDR: u64 = 0x9000;
const LOG_MAX: usize = (SCRIPT_ADDR - LOG_ADDR) as usize / 4;
/// Guest RAM of these VMs; the first window is at 0xd000_0000.
const MEM_MIB: u64 = 64;
const RAM_END: u64 = MEM_MIB << 20;
const WINDOW: u64 = 0xd000_0000;

/// Every queue the driver sets up has this size; descriptors 13..16 are the good request's.
const QSIZE: u16 = 16;
/// Scratch buffer the hostile descriptors point at, the good request and its reply.
const JUNK: u64 = 0x20_0000;
const GOOD_REQ: u64 = 0x30_0000;
const GOOD_REPLY: u64 = 0x30_1000;

fn desc_table(q: u32) -> u64 {
    0x10_0000 + u64::from(q) * 0x1_0000
}
fn avail_ring(q: u32) -> u64 {
    desc_table(q) + 0x4000
}
fn used_ring(q: u32) -> u64 {
    desc_table(q) + 0x8000
}

type Check = Box<dyn Fn(u32) -> bool>;

/// The ops the guest runs, what each logged value must satisfy, and the driver state
/// (next avail index of each queue) needed to compose them.
struct Script {
    base: u64,
    queues: u32,
    ops: Vec<[u32; 4]>,
    checks: Vec<(String, Check)>,
    avail_idx: Vec<u16>,
}

impl Script {
    fn new(base: u64, queues: u32) -> Self {
        Script {
            base,
            queues,
            ops: Vec::new(),
            checks: Vec::new(),
            avail_idx: vec![0; queues as usize],
        }
    }

    fn op(&mut self, op: u32, addr: u64, value: u32, mask: u32) {
        let addr = u32::try_from(addr).expect("the runner reaches 4 GiB");
        self.ops.push([op, addr, value, mask]);
    }
    fn w32(&mut self, addr: u64, v: u32) {
        self.op(1, addr, v, 0);
    }
    fn w16(&mut self, addr: u64, v: u16) {
        self.op(2, addr, u32::from(v), 0);
    }
    fn bytes(&mut self, addr: u64, data: &[u8]) {
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.w32(addr + 4 * i as u64, u32::from_le_bytes(word));
        }
    }
    /// Logs dword `addr`, which must satisfy `check`.
    fn expect(&mut self, addr: u64, what: &str, check: impl Fn(u32) -> bool + 'static) {
        self.op(3, addr, 0, 0);
        self.checks.push((what.to_string(), Box::new(check)));
    }
    /// Polls until `dword [addr] & mask == value` (bounded), then logs it like `expect`.
    fn poll(&mut self, addr: u64, mask: u32, value: u32, what: &str) {
        self.op(4, addr, value, mask);
        self.checks
            .push((what.to_string(), Box::new(move |v| v & mask == value)));
    }
    fn reg(&mut self, off: u64, v: u32) {
        self.w32(self.base + off, v);
    }
    fn expect_reg(&mut self, off: u64, what: &str, check: impl Fn(u32) -> bool + 'static) {
        self.expect(self.base + off, what, check);
    }
    fn status_is(&mut self, what: &str, want: u32) {
        self.expect_reg(reg::STATUS, what, move |v| v == want);
    }
    fn needs_reset(&mut self, what: &str) {
        self.expect_reg(reg::STATUS, what, |v| v & NEEDS_RESET != 0);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, VIRTIO_F_VERSION_1, FEATURES_OK.
    fn init(&mut self) {
        for s in [0, 1, 3] {
            self.reg(reg::STATUS, s);
        }
        self.reg(reg::DRIVER_FEATURES_SEL, 1);
        self.reg(reg::DRIVER_FEATURES, 1);
        self.reg(reg::DRIVER_FEATURES_SEL, 0);
        self.reg(reg::DRIVER_FEATURES, 0);
        self.reg(reg::STATUS, 11);
    }
    fn queue(&mut self, q: u32, num: u32, desc: u64, driver: u64, device: u64) {
        self.reg(reg::QUEUE_SEL, q);
        self.reg(reg::QUEUE_NUM, num);
        for (reg, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, driver),
            (reg::QUEUE_DEVICE_LOW, device),
        ] {
            self.reg(reg, addr as u32);
            self.reg(reg + 4, (addr >> 32) as u32);
        }
        self.reg(reg::QUEUE_READY, 1);
    }
    /// A full, valid set-up of every queue with empty rings, then DRIVER_OK.
    fn setup(&mut self, what: &str) {
        self.init();
        for q in 0..self.queues {
            self.w32(avail_ring(q), 0);
            self.w32(used_ring(q), 0);
            self.avail_idx[q as usize] = 0;
            self.queue(
                q,
                u32::from(QSIZE),
                desc_table(q),
                avail_ring(q),
                used_ring(q),
            );
        }
        self.reg(reg::STATUS, READY);
        self.status_is(what, READY);
    }
    fn desc(&mut self, q: u32, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = desc_table(q) + 16 * u64::from(i);
        self.w32(d, addr as u32);
        self.w32(d + 4, (addr >> 32) as u32);
        self.w32(d + 8, len);
        self.w32(d + 12, u32::from(flags) | (u32::from(next) << 16));
    }
    /// Puts `heads` in the avail ring of `q` and publishes them (no notification).
    fn publish(&mut self, q: u32, heads: &[u16]) {
        let idx = &mut self.avail_idx[q as usize];
        let mut writes = Vec::new();
        for &h in heads {
            writes.push((avail_ring(q) + 4 + 2 * u64::from(*idx % QSIZE), h));
            *idx = idx.wrapping_add(1);
        }
        writes.push((avail_ring(q) + 2, *idx));
        for (addr, v) in writes {
            self.w16(addr, v);
        }
    }
    fn notify(&mut self, q: u32) {
        self.reg(QUEUE_NOTIFY, q);
    }
    /// Waits until the used index of `q` is `n` and logs it.
    fn wait_used(&mut self, q: u32, n: u16, what: &str) {
        self.poll(used_ring(q), 0xffff_0000, u32::from(n) << 16, what);
    }
    /// The used-ring entry `n` (0-based) of `q`: (id, len) addresses.
    fn used_elem(q: u32, n: u16) -> (u64, u64) {
        let e = used_ring(q) + 4 + 8 * u64::from(n % QSIZE);
        (e, e + 4)
    }

    fn end(mut self) -> (Vec<u8>, Vec<(String, Check)>) {
        // The last entry proves the guest ran every op, in order, up to here.
        self.w32(GOOD_REQ - 4, 0x600d_d00d);
        self.expect(
            GOOD_REQ - 4,
            "the guest reached the end of the script",
            |v| v == 0x600d_d00d,
        );
        self.op(0, 0, 0, 0);
        assert!(
            self.checks.len() <= LOG_MAX,
            "the log would overrun the script"
        );
        let bytes = self
            .ops
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        (bytes, self.checks)
    }
}

/// Hostile chains in descriptors 0..13 of `q`; returns their heads. Loops (readable and
/// writable), addresses outside RAM, a huge length across the end of RAM, wrong
/// directions, a zero length, a next index outside the table, bad indirect tables, junk
/// content.
fn hostile_chains(s: &mut Script, q: u32) -> Vec<u16> {
    s.bytes(JUNK, &[0xff; 64]);
    s.desc(q, 0, JUNK, 64, F_NEXT, 1);
    s.desc(q, 1, JUNK, 64, F_NEXT, 0);
    s.desc(q, 11, JUNK, 16, F_NEXT | F_WRITE, 12);
    s.desc(q, 12, JUNK, 16, F_NEXT | F_WRITE, 11);
    s.desc(q, 2, 0xffff_ffff_ffff_f000, 64, 0, 0);
    s.desc(q, 3, RAM_END - 16, u32::MAX, 0, 0);
    s.desc(q, 4, JUNK, 64, F_WRITE, 0);
    s.desc(q, 5, JUNK, 0, 0, 0);
    s.desc(q, 6, JUNK, 44, F_NEXT, 0xffff);
    s.desc(q, 7, JUNK, 17, F_INDIRECT, 0);
    s.desc(q, 8, 0xffff_ffff_0000, 64, F_INDIRECT, 0);
    s.desc(q, 9, JUNK, 64, F_NEXT, 10);
    s.desc(q, 10, JUNK + 0x100, 64, F_WRITE, 0);
    vec![0, 11, 2, 3, 4, 5, 6, 7, 8, 9]
}

/// What a device does with an avail-ring entry naming no descriptor (a head index at or
/// past the queue size).
#[derive(Clone, Copy)]
enum BadHead {
    /// Dropped: nothing in the used ring, the device goes on.
    Dropped,
    /// The ring is corrupt: the device reports DEVICE_NEEDS_RESET.
    NeedsReset,
}

/// One device type under test.
struct Target {
    name: &'static str,
    device_id: u32,
    queues: u32,
    /// Queues whose hostile chains the device consumes as soon as it is notified.
    hostile_queues: &'static [u32],
    /// The queue the good request and the bad heads go to.
    request_queue: u32,
    bad_head: BadHead,
    /// Appends a well-formed request and the checks of its reply; `tag` tells them apart.
    good: fn(&mut Script, &str, u32),
}

/// The whole hostile sequence, for one device at `s.base`.
fn hostile_script(t: &Target) -> Script {
    let mut s = Script::new(WINDOW, t.queues);
    let n = t.queues;
    s.expect_reg(reg::MAGIC, "MagicValue", |v| v == 0x7472_6976);
    let id = t.device_id;
    s.expect_reg(reg::DEVICE_ID, "DeviceID", move |v| v == id);
    s.reg(reg::QUEUE_SEL, n);
    s.expect_reg(
        reg::QUEUE_NUM_MAX,
        "QueueNumMax of a queue past the last",
        |v| v == 0,
    );
    s.reg(reg::QUEUE_SEL, u32::MAX);
    s.expect_reg(reg::QUEUE_NUM_MAX, "QueueNumMax of queue 0xffffffff", |v| {
        v == 0
    });

    // Before any set-up: notifications (through the ioeventfds and, for values no
    // ioeventfd matches, through an MMIO exit), DRIVER_OK out of order, queue registers,
    // an interrupt ACK and config writes.
    for q in (0..=n).chain([0x1_0000, u32::MAX]) {
        s.notify(q);
    }
    s.reg(reg::STATUS, 4);
    s.status_is("status after DRIVER_OK out of order", 0);
    s.queue(0, 8, 0x1234, 0x5678, 0x9abc);
    s.reg(reg::INTERRUPT_ACK, u32::MAX);
    s.reg(CONFIG, u32::MAX);
    s.reg(CONFIG + 0xefc, u32::MAX);
    s.reg(reg::STATUS, 1);
    s.reg(reg::STATUS, 3);
    s.reg(reg::STATUS, 7);
    s.status_is("status after DRIVER_OK before FEATURES_OK", 3);
    // No VIRTIO_F_VERSION_1: FEATURES_OK must stay clear.
    s.reg(reg::DRIVER_FEATURES, u32::MAX);
    s.reg(reg::STATUS, 11);
    s.status_is("status after FEATURES_OK without VERSION_1", 3);
    // A flood of notifications (each unmatched one is an MMIO exit and a rate-limited
    // log line in the VMM; nothing may reach a queue).
    for _ in 0..200 {
        s.notify(u32::MAX);
        s.notify(0);
    }

    // Queue set-ups the device must refuse at DRIVER_OK with DEVICE_NEEDS_RESET.
    let a = desc_table(0);
    let bad: [(&str, u32, u64, u64, u64); 7] = [
        (
            "descriptor table outside RAM",
            16,
            0xffff_f000,
            a + 0x4000,
            a + 0x8000,
        ),
        ("rings above 4 GiB", 16, a | 1 << 32, a + 0x4000, a + 0x8000),
        (
            "used ring across the end of RAM",
            16,
            a,
            a + 0x4000,
            RAM_END - 8,
        ),
        (
            "misaligned descriptor table",
            16,
            a + 1,
            a + 0x4000,
            a + 0x8000,
        ),
        ("queue size 0x10000", 0x1_0000, a, a + 0x4000, a + 0x8000),
        ("queue size 3", 3, a, a + 0x4000, a + 0x8000),
        (
            "queue size 0x8000 (past the maximum)",
            0x8000,
            a,
            a + 0x4000,
            a + 0x8000,
        ),
    ];
    for (what, num, desc, driver, device) in bad {
        s.init();
        s.queue(0, num, desc, driver, device);
        s.reg(reg::STATUS, READY);
        s.needs_reset(&format!("DRIVER_OK with {what}"));
        // Queue registers of a broken device, DRIVER_OK again: ignored.
        s.queue(0, 16, a, a + 0x4000, a + 0x8000);
        s.reg(reg::STATUS, READY);
        s.needs_reset(&format!("{what}: a second DRIVER_OK"));
    }

    // A valid set-up; the registers of a queue that does not exist are ignored.
    s.init();
    s.reg(reg::QUEUE_SEL, u32::MAX);
    s.reg(reg::QUEUE_NUM, 1);
    s.reg(reg::QUEUE_READY, 1);
    s.reg(reg::STATUS, 0);
    s.setup("status after a valid set-up");
    for q in (0..=n).chain([u32::MAX]) {
        s.notify(q); // empty rings
    }

    // Hostile chains: every one is returned (used), the device stays healthy.
    for &q in t.hostile_queues {
        let heads = hostile_chains(&mut s, q);
        s.publish(q, &heads);
        s.notify(q);
        let k = heads.len() as u16;
        s.wait_used(
            q,
            k,
            &format!("used index of queue {q} after {k} hostile chains"),
        );
        s.status_is(&format!("status after hostile chains on queue {q}"), READY);
    }

    // An avail index a whole queue (and more) ahead: the ring is corrupt.
    let q = t.request_queue;
    let idx = s.avail_idx[q as usize].wrapping_add(0x8000);
    s.w16(avail_ring(q) + 2, idx);
    s.notify(q);
    s.poll(
        s.base + reg::STATUS,
        NEEDS_RESET,
        NEEDS_RESET,
        "status after an avail index 0x8000 ahead",
    );
    s.reg(reg::STATUS, READY);
    s.notify(q);
    s.needs_reset("status after DRIVER_OK and a notification on a broken device");

    // Reset; avail-ring entries naming no descriptor, then a good request.
    s.reg(reg::STATUS, 0);
    s.setup("status after the reset that follows the corrupt ring");
    s.publish(q, &[QSIZE, 0xffff]);
    match t.bad_head {
        BadHead::Dropped => {
            (t.good)(&mut s, "after bad heads", 0);
            s.status_is("status after bad heads and a good request", READY);
        }
        BadHead::NeedsReset => {
            s.notify(q);
            s.poll(
                s.base + reg::STATUS,
                NEEDS_RESET,
                NEEDS_RESET,
                "status after bad heads",
            );
            s.reg(reg::STATUS, 0);
            s.setup("status after the reset that follows bad heads");
            (t.good)(&mut s, "after bad heads and a reset", 0);
        }
    }

    // Finally a clean device: a good request after everything.
    s.reg(reg::STATUS, 0);
    s.setup("status of the final set-up");
    (t.good)(&mut s, "final", 1);
    s.status_is("final status", READY);
    s
}

/// A guest-initiated connection to host port [`VSOCK_PORT`], where the test listens: the
/// device must answer RESPONSE in the RX buffer. With `round` 1 the RX queue first holds
/// the hostile chains (readable, short, looping ...), which the device must return unused.
fn vsock_good(s: &mut Script, what: &str, round: u32) {
    const RX: u32 = 0;
    const TX: u32 = 1;
    let mut rx_heads = Vec::new();
    if round == 1 {
        // Descriptor 4 (writable, 64 bytes) is a valid RX buffer: leave it out.
        rx_heads = hostile_chains(s, RX);
        rx_heads.retain(|&h| h != 4);
    }
    s.desc(RX, 13, GOOD_REPLY, 4096, F_WRITE, 0);
    s.w32(GOOD_REPLY + 28, 0);
    rx_heads.push(13);
    s.publish(RX, &rx_heads);
    s.notify(RX);
    let hdr = vsock_hdr(Op::Request, 1000 + round, VSOCK_PORT, 0, 65536);
    s.bytes(GOOD_REQ, &hdr);
    s.desc(TX, 13, GOOD_REQ, 44, 0, 0);
    s.publish(TX, &[13]);
    s.notify(TX);
    let n = rx_heads.len() as u16;
    s.wait_used(RX, n, &format!("vsock {what}: RX used index"));
    let (id, len) = Script::used_elem(RX, n - 1);
    s.expect(id, &format!("vsock {what}: RX used id"), |v| v == 13);
    s.expect(len, &format!("vsock {what}: RX used len"), |v| v == 44);
    s.expect(
        GOOD_REPLY + 28,
        &format!("vsock {what}: type/op (RESPONSE)"),
        |v| v == 0x0002_0001,
    );
}

/// The host port the vsock guest connects to.
const VSOCK_PORT: u32 = 5000;

/// FUSE_INIT on the request queue: a reply with error 0 and major 7.
fn fs_good(s: &mut Script, what: &str, round: u32) {
    const REQ: u32 = 1;
    let mut req = Vec::new();
    req.extend_from_slice(&56u32.to_le_bytes()); // len
    req.extend_from_slice(&26u32.to_le_bytes()); // FUSE_INIT
    req.extend_from_slice(&u64::from(round + 1).to_le_bytes()); // unique
    req.extend_from_slice(&[0; 24]); // nodeid, uid, gid, pid, padding
    req.extend_from_slice(&7u32.to_le_bytes()); // major
    req.extend_from_slice(&31u32.to_le_bytes()); // minor
    req.extend_from_slice(&0x2_0000u32.to_le_bytes()); // max_readahead
    req.extend_from_slice(&0u32.to_le_bytes()); // flags
    s.bytes(GOOD_REQ, &req);
    s.bytes(GOOD_REPLY, &[0xee; 32]);
    s.desc(REQ, 13, GOOD_REQ, 56, F_NEXT, 14);
    s.desc(REQ, 14, GOOD_REPLY, 256, F_WRITE, 0);
    let n = s.avail_idx[REQ as usize];
    s.publish(REQ, &[13]);
    s.notify(REQ);
    s.wait_used(REQ, n + 1, &format!("fs {what}: used index"));
    let (id, len) = Script::used_elem(REQ, n);
    s.expect(id, &format!("fs {what}: used id"), |v| v == 13);
    s.expect(len, &format!("fs {what}: used len"), |v| v > 16 && v <= 256);
    s.expect(GOOD_REPLY + 4, &format!("fs {what}: FUSE error"), |v| {
        v == 0
    });
    s.expect(GOOD_REPLY + 16, &format!("fs {what}: FUSE major"), |v| {
        v == 7
    });
}

/// What the blk test image starts with; the good request reads it back.
const BLK_PATTERN: u32 = u32::from_le_bytes(*b"RUNV");

/// A read of sector 0: status OK and the image's first bytes in the buffer.
fn blk_good(s: &mut Script, what: &str, _round: u32) {
    const Q: u32 = 0;
    let mut req = Vec::new();
    req.extend_from_slice(&0u32.to_le_bytes()); // VIRTIO_BLK_T_IN
    req.extend_from_slice(&0u32.to_le_bytes()); // reserved
    req.extend_from_slice(&0u64.to_le_bytes()); // sector
    s.bytes(GOOD_REQ, &req);
    s.w32(GOOD_REPLY, 0);
    s.w32(GOOD_REPLY + 512, 0xff);
    s.desc(Q, 13, GOOD_REQ, 16, F_NEXT, 14);
    s.desc(Q, 14, GOOD_REPLY, 512, F_NEXT | F_WRITE, 15);
    s.desc(Q, 15, GOOD_REPLY + 512, 1, F_WRITE, 0);
    let n = s.avail_idx[Q as usize];
    s.publish(Q, &[13]);
    s.notify(Q);
    s.wait_used(Q, n + 1, &format!("blk {what}: used index"));
    let (id, len) = Script::used_elem(Q, n);
    s.expect(id, &format!("blk {what}: used id"), |v| v == 13);
    s.expect(len, &format!("blk {what}: used len"), |v| v == 513);
    s.expect(GOOD_REPLY, &format!("blk {what}: data"), |v| {
        v == BLK_PATTERN
    });
    s.expect(GOOD_REPLY + 512, &format!("blk {what}: status"), |v| {
        v & 0xff == 0
    });
}

/// Runs `script` in a fresh VM with `device` as its only virtio device; returns how the VM
/// ended and the guest's log. Fails the test if the VM does not end within 60 s.
fn run_script(
    name: &'static str,
    device: Box<dyn VirtioDevice>,
    script: Vec<u8>,
) -> (ExitReason, Vec<u32>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut vm = kvm_vm(MEM_MIB);
        let mem = vm.memory().clone();
        mem.write_slice(SCRIPT_RUNNER, GuestAddress(CODE_ADDR))
            .unwrap();
        mem.write_slice(&script, GuestAddress(SCRIPT_ADDR)).unwrap();
        vm.add_legacy_devices(ConsoleOut::new(None)).unwrap();
        let slot = vm.add_virtio_device(name, device).unwrap();
        assert_eq!(slot.base, WINDOW as u32);
        vm.create_vcpus(1, None).unwrap();
        unreal_mode(&vm);
        let reason = vm.run().unwrap();
        let mut log = vec![0u8; LOG_MAX * 4];
        mem.read_slice(&mut log, GuestAddress(LOG_ADDR)).unwrap();
        let log = log
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let _ = tx.send((reason, log));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{name}: the VM did not end within 60 s ({e})"))
}

/// Runs `t`'s hostile script against `device` and checks every observation.
fn run_hostile(t: &Target, device: Box<dyn VirtioDevice>) {
    let (script, checks) = hostile_script(t).end();
    let start = Instant::now();
    let (reason, log) = run_script(t.name, device, script);
    assert_eq!(
        reason,
        ExitReason::PowerOff,
        "{}: the guest did not power off",
        t.name
    );
    let failed: Vec<String> = checks
        .iter()
        .zip(&log)
        .filter(|((_, check), &v)| !check(v))
        .map(|((what, _), v)| format!("{what}: {v:#x}"))
        .collect();
    assert!(failed.is_empty(), "{}: {}", t.name, failed.join("\n  "));
    eprintln!(
        "{}: {} checks passed in {:?}",
        t.name,
        checks.len(),
        start.elapsed()
    );
}

#[test]
#[ignore = "needs /dev/kvm: a guest script drives virtio-vsock through MMIO exits"]
fn kvm_hostile_guest_driver_cannot_break_virtio_vsock() {
    let uds = std::env::temp_dir().join(format!("runv-guest-vsock-{}.sock", std::process::id()));
    let port = PathBuf::from(format!("{}_{VSOCK_PORT}", uds.display()));
    let _ = std::fs::remove_file(&port);
    let listener = UnixListener::bind(&port).unwrap();
    listener.set_nonblocking(true).unwrap();
    let device = VsockDevice::new(3, &uds).unwrap();
    let target = Target {
        name: "virtio-vsock hostile",
        device_id: 19,
        queues: 3,
        hostile_queues: &[1],
        request_queue: 1,
        bad_head: BadHead::Dropped,
        good: vsock_good,
    };
    run_hostile(&target, Box::new(device));
    // Both guest connects reached the listener; the VM's end removed the device socket.
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    std::fs::remove_file(&port).unwrap();
    assert_eq!(accepted, 2, "guest connections that reached the host");
    assert!(!uds.exists(), "the vsock socket outlived the VM");
}

#[test]
#[ignore = "needs /dev/kvm: a guest script drives virtio-fs through MMIO exits"]
fn kvm_hostile_guest_driver_cannot_break_virtio_fs() {
    let dir = std::env::temp_dir().join(format!("runv-guest-fs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg: FsConfig = format!("tag=hostile,path={}", dir.display())
        .parse()
        .unwrap();
    let target = Target {
        name: "virtio-fs hostile",
        device_id: 26,
        queues: 2,
        hostile_queues: &[0, 1],
        request_queue: 1,
        bad_head: BadHead::NeedsReset,
        good: fs_good,
    };
    run_hostile(&target, Box::new(Fs::new(&cfg).unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs /dev/kvm: a guest script drives virtio-blk through MMIO exits"]
fn kvm_hostile_guest_driver_cannot_break_virtio_blk() {
    let image = std::env::temp_dir().join(format!("runv-guest-script-{}.img", std::process::id()));
    let mut bytes = vec![0u8; 64 * 1024];
    bytes[..4].copy_from_slice(&BLK_PATTERN.to_le_bytes());
    std::fs::write(&image, bytes).unwrap();
    let cfg: BlockConfig = format!("path={}", image.display()).parse().unwrap();
    let target = Target {
        name: "virtio-blk hostile",
        device_id: 2,
        queues: 1,
        hostile_queues: &[0],
        request_queue: 0,
        bad_head: BadHead::NeedsReset,
        good: blk_good,
    };
    run_hostile(&target, Box::new(Block::new(&cfg).unwrap()));
    std::fs::remove_file(&image).unwrap();
}
