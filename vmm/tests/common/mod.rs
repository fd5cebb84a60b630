//! The one fixture of the integration tests.
//!
//! * virtio: descriptor flags (from `virtio-bindings`), the virtio-mmio registers (the
//!   transport's own [`reg`] offsets), and the hostile virtio-mmio driver shared by the
//!   `virtio_*_hostile` tests: guest memory, the real [`MmioTransport`] and the real device
//!   [`EventLoop`], with no KVM (the test plays the guest, writing registers and rings in
//!   guest memory). Each test builds a [`Guest`] for its device with the resources that
//!   device needs, and adds its own requests.
//! * KVM (the `kvm_*` tests): a VM on the host's `/dev/kvm` and vCPUs started in real mode.
//! * vsock: a packet header as the guest writes it.
//!
//! Each test binary uses part of this module.
#![allow(dead_code)]

use kvm_ioctls::{Kvm, VcpuFd};
pub use runv_vmm::devices::virtio::mmio::reg;
use runv_vmm::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY};
use runv_vmm::devices::virtio::vsock::{Op, HOST_CID, TYPE_STREAM};
use runv_vmm::devices::virtio::{Interrupt, VirtioDevice};
use runv_vmm::devices::BusDevice;
use runv_vmm::event_loop::EventLoop;
use runv_vmm::vm::Vm;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// VRING_DESC_F_NEXT.
pub const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// VRING_DESC_F_WRITE.
pub const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// VRING_DESC_F_INDIRECT.
pub const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
/// Status bit DEVICE_NEEDS_RESET.
pub const NEEDS_RESET: u32 = 0x40;
/// Status ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK: a device in use.
pub const READY: u32 = 15;

/// A VM of `mem_mib` MiB on the host's /dev/kvm.
pub fn kvm_vm(mem_mib: u64) -> Vm {
    let kvm = Kvm::new().expect("open /dev/kvm (the kvm_* tests need KVM)");
    Vm::new(kvm, mem_mib).unwrap()
}

/// Points a vCPU at `rip` in real mode, code segment 0.
pub fn real_mode(fd: &VcpuFd, rip: u64) {
    let mut sregs = fd.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).unwrap();
    let mut regs = fd.get_regs().unwrap();
    regs.rip = rip;
    regs.rflags = 2;
    fd.set_regs(&regs).unwrap();
}

/// [`real_mode`] with a 4 GiB DS limit ("unreal mode", so the guest reaches the device
/// windows at 0xd000_0000) and the stack at `rsp`.
pub fn unreal_mode(fd: &VcpuFd, rip: u64, rsp: u64) {
    let mut sregs = fd.get_sregs().unwrap();
    sregs.ds.base = 0;
    sregs.ds.selector = 0;
    sregs.ds.limit = 0xffff_ffff;
    sregs.ds.g = 1;
    fd.set_sregs(&sregs).unwrap();
    real_mode(fd, rip);
    let mut regs = fd.get_regs().unwrap();
    regs.rsp = rsp;
    fd.set_regs(&regs).unwrap();
}

/// A fresh directory named `prefix...`, removed when dropped.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A vsock stream header from the guest (CID 3) to the host, as the guest writes it.
pub fn vsock_hdr(op: Op, src_port: u32, dst_port: u32, len: u32, buf_alloc: u32) -> Vec<u8> {
    [
        &3u64.to_le_bytes()[..],
        &HOST_CID.to_le_bytes(),
        &src_port.to_le_bytes(),
        &dst_port.to_le_bytes(),
        &len.to_le_bytes(),
        &TYPE_STREAM.to_le_bytes(),
        &(op as u16).to_le_bytes(),
        &0u32.to_le_bytes(), // flags
        &buf_alloc.to_le_bytes(),
        &0u32.to_le_bytes(), // fwd_cnt
    ]
    .concat()
}

/// Where a device's queues live in guest memory: queue q's descriptor table at
/// `base + q * stride`, its avail ring 0x1000 and its used ring 0x2000 above that.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Guest RAM in bytes.
    pub mem: usize,
    /// Descriptor table of queue 0.
    pub base: u64,
    /// Distance between the tables of two queues.
    pub stride: u64,
    /// Number of queues.
    pub queues: u16,
    /// Size of each queue.
    pub qsize: u16,
}

impl Layout {
    /// `queues` queues of 16 in 1 MiB of RAM: queue q's descriptor table at
    /// 0x1000 + q * 0x3000, its avail and used rings the next two pages.
    pub const fn small(queues: u16) -> Layout {
        Layout {
            mem: 0x10_0000,
            base: 0x1000,
            stride: 0x3000,
            queues,
            qsize: 16,
        }
    }
}

/// A [`Driver`] plus whatever the test's device needs kept alive (a backing file, a
/// directory, request state), dropped after the device.
pub struct Guest<R> {
    pub d: Driver,
    pub res: R,
}

impl<R> Guest<R> {
    /// `device` (called `name`) behind a driver with `layout`, keeping `res`.
    pub fn new(name: &str, device: Box<dyn VirtioDevice>, layout: Layout, res: R) -> Self {
        Guest {
            d: Driver::new(name, device, layout),
            res,
        }
    }
}

impl Guest<tempfile::TempDir> {
    /// `make(dir)`'s device (called `name`) behind a driver with `layout`, its files in
    /// a fresh directory `dir` that goes with the guest.
    pub fn in_temp_dir(
        name: &str,
        layout: Layout,
        make: impl FnOnce(&Path) -> Box<dyn VirtioDevice>,
    ) -> Self {
        let dir = temp_dir("runv-hostile-");
        let device = make(dir.path());
        Guest::new(name, device, layout, dir)
    }
}

impl<R> Deref for Guest<R> {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.d
    }
}

impl<R> DerefMut for Guest<R> {
    fn deref_mut(&mut self) -> &mut Driver {
        &mut self.d
    }
}

/// The driver side of one virtio-mmio device.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub t: MmioTransport,
    /// The next avail index the driver publishes, per queue.
    pub avail_idx: Vec<u16>,
    layout: Layout,
    _el: EventLoop,
}

impl Driver {
    pub fn new(name: &str, device: Box<dyn VirtioDevice>, layout: Layout) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout.mem)]).unwrap();
        let el = EventLoop::start().unwrap();
        let t = MmioTransport::new(
            name.into(),
            device,
            mem.clone(),
            Arc::new(Interrupt::for_tests().unwrap()),
            el.handle(),
        )
        .unwrap();
        Driver {
            mem,
            t,
            avail_idx: vec![0; usize::from(layout.queues)],
            layout,
            _el: el,
        }
    }

    pub fn desc_table(&self, q: u16) -> u64 {
        self.layout.base + u64::from(q) * self.layout.stride
    }

    pub fn avail(&self, q: u16) -> u64 {
        self.desc_table(q) + 0x1000
    }

    pub fn used(&self, q: u16) -> u64 {
        self.desc_table(q) + 0x2000
    }

    pub fn wr(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(reg::STATUS, &mut b);
        u32::from_le_bytes(b)
    }

    /// The Linux driver's initialisation: reset, features (VERSION_1), then every queue
    /// at its rings, then DRIVER_OK.
    pub fn init(&mut self) {
        for v in [0, 1, 3] {
            self.wr(reg::STATUS, v);
        }
        for (sel, v) in [(0, 0), (1, 1)] {
            self.wr(reg::DRIVER_FEATURES_SEL, sel);
            self.wr(reg::DRIVER_FEATURES, v);
        }
        self.wr(reg::STATUS, 11);
        for q in 0..self.layout.queues {
            self.wr(reg::QUEUE_SEL, u32::from(q));
            self.wr(reg::QUEUE_NUM, u32::from(self.layout.qsize));
            for (reg, addr) in [
                (reg::QUEUE_DESC_LOW, self.desc_table(q)),
                (reg::QUEUE_DRIVER_LOW, self.avail(q)),
                (reg::QUEUE_DEVICE_LOW, self.used(q)),
            ] {
                self.wr(reg, addr as u32);
                self.wr(reg + 4, 0);
            }
            self.wr(reg::QUEUE_READY, 1);
            self.mem
                .write_obj(0u16, GuestAddress(self.avail(q) + 2))
                .unwrap();
            self.mem
                .write_obj(0u16, GuestAddress(self.used(q) + 2))
                .unwrap();
        }
        self.avail_idx.fill(0);
        self.wr(reg::STATUS, READY);
        assert_eq!(self.status(), READY, "device activated");
    }

    pub fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_table(q) + 16 * u64::from(i);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Writes `chain` as (addr, len, flags, next) at descriptors `first..` of queue `q`,
    /// with each `next` below the queue size moved by `first` too.
    pub fn chain(&self, q: u16, first: u16, chain: &[(u64, u32, u16, u16)]) {
        for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
            let next = if next < self.layout.qsize {
                next + first
            } else {
                next
            };
            self.desc(q, first + i as u16, addr, len, flags, next);
        }
    }

    /// Publishes head `head` on queue `q` and notifies it.
    pub fn submit(&mut self, q: u16, head: u16) {
        let avail = self.avail(q);
        let idx = &mut self.avail_idx[usize::from(q)];
        let slot = u64::from(*idx % self.layout.qsize);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        *idx = idx.wrapping_add(1);
        let idx = *idx;
        self.mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
        self.wr(QUEUE_NOTIFY, u32::from(q));
    }

    /// [`Driver::submit`], then waits until the device returned the chain (true) or
    /// reported it needs a reset (false).
    pub fn submit_and_wait(&mut self, q: u16, head: u16) -> bool {
        let want = self.used_idx(q).wrapping_add(1);
        self.submit(q, head);
        self.wait(q, want)
    }

    /// Moves the avail index of `q` a thousand entries ahead of the ring and notifies: a
    /// corrupt ring.
    pub fn runaway_avail_index(&mut self, q: u16) {
        let far = self.avail_idx[usize::from(q)].wrapping_add(1000);
        self.mem
            .write_obj(far, GuestAddress(self.avail(q) + 2))
            .unwrap();
        self.wr(QUEUE_NOTIFY, u32::from(q));
    }

    pub fn used_idx(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(self.used(q) + 2)).unwrap()
    }

    /// Waits until queue `q`'s used index reaches `idx` (true) or the device reports it
    /// needs a reset (false).
    pub fn wait(&mut self, q: u16, idx: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.used_idx(q) == idx {
                return true;
            }
            if self.status() & NEEDS_RESET != 0 {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the device neither served queue {q} nor reported an error within 5 s");
    }

    /// Waits up to 5 s for DEVICE_NEEDS_RESET; fails with `msg` if it does not come.
    pub fn wait_needs_reset(&mut self, msg: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.status() & NEEDS_RESET == 0 {
            assert!(Instant::now() < deadline, "{msg}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
