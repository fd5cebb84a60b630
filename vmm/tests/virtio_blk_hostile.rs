//! A hostile driver against virtio-blk over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers and rings in
//! guest memory). Notifications before set-up, register garbage, descriptor loops,
//! out-of-range addresses and lengths, wrong directions, huge ring indexes: the VMM keeps
//! serving, the device at worst reports DEVICE_NEEDS_RESET, and after a reset a good
//! request is served again.

mod common;

use common::{Layout, F_NEXT, F_WRITE};
use runv_vmm::devices::virtio::block::{Block, BlockConfig};
use runv_vmm::devices::virtio::mmio::QUEUE_NOTIFY;
use vm_memory::{Bytes, GuestAddress};

/// One queue: descriptor table, avail and used ring at 0x1000, 0x2000, 0x3000.
const LAYOUT: Layout = Layout::small(1);
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x2_0000;
const STATUS: u64 = 0x3_0000;
/// The only queue.
const Q: u16 = 0;

/// Keeps the directory of the backing image until the end.
type Guest = common::Guest<tempfile::TempDir>;

/// virtio-blk on a 64 KiB image, initialised by [`common::Driver::init`].
fn guest() -> Guest {
    Guest::in_temp_dir("virtio-blk hostile", LAYOUT, |dir| {
        let image = dir.join("disk.img");
        std::fs::write(&image, vec![0x5a; 64 * 1024]).unwrap();
        let cfg: BlockConfig = format!("path={}", image.display()).parse().unwrap();
        Box::new(Block::new(&cfg).unwrap())
    })
}

impl Guest {
    /// A good 512-byte read of sector 1 as chain 0-1-2; returns the status byte.
    fn good_read(&mut self) -> u8 {
        self.mem.write_obj(0u32, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(1u64, GuestAddress(HDR + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        self.desc(Q, 0, HDR, 16, F_NEXT, 1);
        self.desc(Q, 1, DATA, 512, F_NEXT | F_WRITE, 2);
        self.desc(Q, 2, STATUS, 1, F_WRITE, 0);
        assert!(self.submit_and_wait(Q, 0), "good request served");
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }
}

#[test]
fn hostile_rings_never_take_the_device_or_the_vmm_down() {
    let mut g = guest();
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
            (LAYOUT.mem as u64 - 100, u32::MAX - 64, F_NEXT | F_WRITE, 2),
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
        g.chain(Q, 0, chain);
        assert!(g.submit_and_wait(Q, 0), "bad chain {chain:x?} was answered");
        assert_eq!(g.good_read(), 0, "still serving after {chain:x?}");
    }

    // Ring-level garbage breaks the device (DEVICE_NEEDS_RESET), not the VMM; a reset and
    // a fresh set-up bring it back.
    for hostile in ["head index beyond the queue", "avail index far ahead"] {
        match hostile {
            "head index beyond the queue" => g.submit(Q, 200),
            _ => g.runaway_avail_index(Q),
        }
        g.wait_needs_reset(&format!("{hostile}: no DEVICE_NEEDS_RESET"));
        g.init();
        assert_eq!(g.good_read(), 0, "served again after a reset ({hostile})");
    }
}
