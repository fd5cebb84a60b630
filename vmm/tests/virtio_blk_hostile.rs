//! A hostile driver against virtio-blk over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers and rings in
//! guest memory). Notifications before set-up, register garbage, descriptor loops,
//! out-of-range addresses and lengths, wrong directions, huge ring indexes: the VMM keeps
//! serving, the device at worst reports DEVICE_NEEDS_RESET, and after a reset a good
//! request is served again.

use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::{Block, BlockConfig};
use vmm::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY};
use vmm::devices::virtio::Interrupt;
use vmm::devices::MmioDevice;
use vmm::event_loop::EventLoop;

const MEM: usize = 0x10_0000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x3_0000;
const QSIZE: u16 = 16;
const STATUS_REG: u64 = 0x70;
const NEEDS_RESET: u32 = 0x40;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

struct Guest {
    mem: GuestMemoryMmap,
    t: MmioTransport,
    avail_idx: u16,
    _el: EventLoop,
    image: std::path::PathBuf,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.image);
    }
}

impl Guest {
    fn new() -> Guest {
        let image = std::env::temp_dir().join(format!("runv-hostile-{}.img", std::process::id()));
        std::fs::write(&image, vec![0x5a; 64 * 1024]).unwrap();
        let cfg: BlockConfig = format!("path={}", image.display()).parse().unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let el = EventLoop::start().unwrap();
        let t = MmioTransport::new(
            "virtio-blk hostile".into(),
            Box::new(Block::new(&cfg).unwrap()),
            mem.clone(),
            Arc::new(Interrupt::for_tests().unwrap()),
            el.handle(),
        )
        .unwrap();
        Guest {
            mem,
            t,
            avail_idx: 0,
            _el: el,
            image,
        }
    }

    fn wr(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    fn status(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(STATUS_REG, &mut b);
        u32::from_le_bytes(b)
    }

    /// The Linux driver's initialisation, with one queue of QSIZE at DESC/AVAIL/USED.
    fn init(&mut self) {
        for v in [0, 1, 3] {
            self.wr(STATUS_REG, v);
        }
        for (sel, v) in [(0, 0), (1, 1)] {
            self.wr(0x24, sel);
            self.wr(0x20, v);
        }
        self.wr(STATUS_REG, 11);
        self.wr(0x30, 0);
        self.wr(0x38, u32::from(QSIZE));
        for (reg, addr) in [(0x80, DESC), (0x90, AVAIL), (0xa0, USED)] {
            self.wr(reg, addr as u32);
            self.wr(reg + 4, 0);
        }
        self.wr(0x44, 1);
        self.mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
        self.mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
        self.avail_idx = 0;
        self.wr(STATUS_REG, 15);
        assert_eq!(self.status(), 15, "device activated");
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
    }

    /// Publishes head `head` and notifies queue 0.
    fn submit(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.wr(QUEUE_NOTIFY, 0);
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Waits until the used index reaches `idx` or the device says it needs a reset.
    fn wait(&mut self, idx: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.used_idx() == idx {
                return true;
            }
            if self.status() & NEEDS_RESET != 0 {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the device neither served the queue nor reported an error within 5 s");
    }

    /// A good 512-byte read of sector 1 as chain 0-1-2; returns the status byte.
    fn good_read(&mut self) -> u8 {
        self.mem.write_obj(0u32, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(1u64, GuestAddress(HDR + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        self.desc(0, HDR, 16, F_NEXT, 1);
        self.desc(1, DATA, 512, F_NEXT | F_WRITE, 2);
        self.desc(2, STATUS, 1, F_WRITE, 0);
        let want = self.used_idx().wrapping_add(1);
        self.submit(0);
        assert!(self.wait(want), "good request served");
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }
}

#[test]
fn hostile_rings_never_take_the_device_or_the_vmm_down() {
    let mut g = Guest::new();
    // Notifications and garbage before any set-up.
    for v in [0, 1, 7, u32::MAX] {
        g.wr(QUEUE_NOTIFY, v);
    }
    for off in (0..0x100).step_by(4) {
        g.wr(off, 0xdead_beef);
    }
    g.init();
    assert_eq!(g.good_read(), 0);

    // Per-request garbage: each is answered (IOERR or dropped), the device stays up.
    let cases: Vec<Vec<(u64, u32, u16, u16)>> = vec![
        // loop: 0 -> 1 -> 0
        vec![(HDR, 16, F_NEXT, 1), (DATA, 512, F_NEXT | F_WRITE, 0)],
        // data outside guest memory, huge length
        vec![
            (HDR, 16, F_NEXT, 1),
            (MEM as u64 - 100, u32::MAX - 64, F_NEXT | F_WRITE, 2),
            (STATUS, 1, F_WRITE, 0),
        ],
        // wrong directions everywhere
        vec![
            (HDR, 16, F_NEXT | F_WRITE, 1),
            (DATA, 512, F_NEXT, 2),
            (STATUS, 1, 0, 0),
        ],
        // zero-length everything
        vec![
            (HDR, 0, F_NEXT, 1),
            (DATA, 0, F_NEXT | F_WRITE, 2),
            (STATUS, 0, F_WRITE, 0),
        ],
        // next index beyond the table
        vec![(HDR, 16, F_NEXT, 999)],
        // header address at the top of the address space
        vec![(u64::MAX - 4, 16, F_NEXT, 1), (STATUS, 1, F_WRITE, 0)],
    ];
    for chain in &cases {
        for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
            g.desc(i as u16, addr, len, flags, next);
        }
        let want = g.used_idx().wrapping_add(1);
        g.submit(0);
        assert!(g.wait(want), "bad chain {chain:x?} was answered");
        assert_eq!(g.good_read(), 0, "still serving after {chain:x?}");
    }

    // Ring-level garbage breaks the device (DEVICE_NEEDS_RESET), not the VMM; a reset and
    // a fresh set-up bring it back.
    for hostile in ["head index beyond the queue", "avail index far ahead"] {
        match hostile {
            "head index beyond the queue" => g.submit(200),
            _ => {
                g.mem
                    .write_obj(g.avail_idx.wrapping_add(1000), GuestAddress(AVAIL + 2))
                    .unwrap();
                g.wr(QUEUE_NOTIFY, 0);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while g.status() & NEEDS_RESET == 0 {
            assert!(
                Instant::now() < deadline,
                "{hostile}: no DEVICE_NEEDS_RESET"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        g.init();
        assert_eq!(g.good_read(), 0, "served again after a reset ({hostile})");
    }
}
