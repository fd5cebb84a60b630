//! The hostile virtio-mmio driver shared by the `virtio_*_hostile` tests: guest memory,
//! the real [`MmioTransport`] and the real device [`EventLoop`], with no KVM (the test
//! plays the guest, writing registers and rings in guest memory). Each test builds a
//! [`Guest`] from a [`Driver`] for its device and the resources that device needs, and
//! adds its own requests.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY};
use vmm::devices::virtio::{Interrupt, VirtioDevice};
use vmm::devices::MmioDevice;
use vmm::event_loop::EventLoop;

pub const STATUS_REG: u64 = 0x70;
pub const NEEDS_RESET: u32 = 0x40;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// Where the rings live: queue q's descriptor table at `base + q * stride`, its avail ring
/// 0x1000 and its used ring 0x2000 above that.
pub struct Rings {
    pub base: u64,
    pub stride: u64,
}

/// A [`Driver`] plus whatever the test's device needs kept alive (a backing file, a
/// directory, request state), dropped after the device.
pub struct Guest<R> {
    pub d: Driver,
    /// Only read by some tests; the others just keep it until the end (its Drop cleans up).
    #[allow(dead_code)]
    pub res: R,
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

/// The driver side of one virtio-mmio device with `queues` queues of `qsize` each.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub t: MmioTransport,
    /// The next avail index the driver publishes, per queue.
    pub avail_idx: Vec<u16>,
    rings: Rings,
    queues: u16,
    qsize: u16,
    _el: EventLoop,
}

impl Driver {
    pub fn new(
        name: &str,
        device: Box<dyn VirtioDevice>,
        mem_size: usize,
        rings: Rings,
        queues: u16,
        qsize: u16,
    ) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
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
            avail_idx: vec![0; usize::from(queues)],
            rings,
            queues,
            qsize,
            _el: el,
        }
    }

    pub fn desc_table(&self, q: u16) -> u64 {
        self.rings.base + u64::from(q) * self.rings.stride
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
        self.t.read(STATUS_REG, &mut b);
        u32::from_le_bytes(b)
    }

    /// The Linux driver's initialisation: reset, features (VERSION_1), then every queue
    /// at its rings, then DRIVER_OK.
    pub fn init(&mut self) {
        for v in [0, 1, 3] {
            self.wr(STATUS_REG, v);
        }
        for (sel, v) in [(0, 0), (1, 1)] {
            self.wr(0x24, sel);
            self.wr(0x20, v);
        }
        self.wr(STATUS_REG, 11);
        for q in 0..self.queues {
            self.wr(0x30, u32::from(q));
            self.wr(0x38, u32::from(self.qsize));
            for (reg, addr) in [
                (0x80, self.desc_table(q)),
                (0x90, self.avail(q)),
                (0xa0, self.used(q)),
            ] {
                self.wr(reg, addr as u32);
                self.wr(reg + 4, 0);
            }
            self.wr(0x44, 1);
            self.mem
                .write_obj(0u16, GuestAddress(self.avail(q) + 2))
                .unwrap();
            self.mem
                .write_obj(0u16, GuestAddress(self.used(q) + 2))
                .unwrap();
        }
        self.avail_idx.fill(0);
        self.wr(STATUS_REG, 15);
        assert_eq!(self.status(), 15, "device activated");
    }

    pub fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_table(q) + 16 * u64::from(i);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Publishes head `head` on queue `q` and notifies it.
    pub fn submit(&mut self, q: u16, head: u16) {
        let avail = self.avail(q);
        let idx = &mut self.avail_idx[usize::from(q)];
        let slot = u64::from(*idx % self.qsize);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        *idx = idx.wrapping_add(1);
        let idx = *idx;
        self.mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
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
