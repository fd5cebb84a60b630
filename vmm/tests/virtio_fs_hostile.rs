//! A hostile driver against virtio-fs over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers, rings and FUSE
//! messages in guest memory). Garbage before set-up, descriptor loops, out-of-range
//! addresses and lengths, wrong directions, zero lengths and garbage FUSE headers on both
//! queues: each request fails alone and a good FUSE request is served right after. Ring
//! garbage makes the device report DEVICE_NEEDS_RESET; after a reset it serves again.

use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InHeader, InitIn, Opcode, OutHeader, KERNEL_VERSION};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::fs::{Fs, FsConfig};
use vmm::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY};
use vmm::devices::virtio::Interrupt;
use vmm::devices::MmioDevice;
use vmm::event_loop::EventLoop;
use vmm_sys_util::tempdir::TempDir;

const MEM: usize = 0x40_0000;
const QSIZE: u16 = 16;
/// Rings of queue q at RINGS + q * 0x4000: descriptors, then avail, then used.
const RINGS: u64 = 0x1_0000;
const REQ: u64 = 0x10_0000;
const REPLY: u64 = 0x20_0000;
const REPLY_LEN: u32 = 0x1_0000;
const STATUS_REG: u64 = 0x70;
const NEEDS_RESET: u32 = 0x40;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
/// The request queue (0 is hiprio).
const REQUEST_Q: u16 = 1;

fn desc_base(q: u16) -> u64 {
    RINGS + u64::from(q) * 0x4000
}
fn avail_base(q: u16) -> u64 {
    desc_base(q) + 0x1000
}
fn used_base(q: u16) -> u64 {
    desc_base(q) + 0x2000
}

struct Guest {
    mem: GuestMemoryMmap,
    t: MmioTransport,
    avail_idx: [u16; 2],
    unique: u64,
    _el: EventLoop,
    _dir: TempDir,
}

impl Guest {
    fn new() -> Guest {
        let dir = TempDir::new_with_prefix("/tmp/runv-fs-hostile-").unwrap();
        std::fs::write(dir.as_path().join("file"), b"data").unwrap();
        let cfg: FsConfig = format!("tag=hostile,path={}", dir.as_path().display())
            .parse()
            .unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let el = EventLoop::start().unwrap();
        let t = MmioTransport::new(
            "virtio-fs hostile".into(),
            Box::new(Fs::new(&cfg).unwrap()),
            mem.clone(),
            Arc::new(Interrupt::for_tests().unwrap()),
            el.handle(),
        )
        .unwrap();
        Guest {
            mem,
            t,
            avail_idx: [0; 2],
            unique: 0,
            _el: el,
            _dir: dir,
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

    /// The Linux driver's initialisation: reset, features (VERSION_1), both queues.
    fn init(&mut self) {
        for v in [0, 1, 3] {
            self.wr(STATUS_REG, v);
        }
        for (sel, v) in [(0, 0), (1, 1)] {
            self.wr(0x24, sel);
            self.wr(0x20, v);
        }
        self.wr(STATUS_REG, 11);
        for q in 0..2u16 {
            self.wr(0x30, u32::from(q));
            self.wr(0x38, u32::from(QSIZE));
            for (reg, addr) in [
                (0x80, desc_base(q)),
                (0x90, avail_base(q)),
                (0xa0, used_base(q)),
            ] {
                self.wr(reg, addr as u32);
                self.wr(reg + 4, 0);
            }
            self.wr(0x44, 1);
            self.mem
                .write_obj(0u16, GuestAddress(avail_base(q) + 2))
                .unwrap();
            self.mem
                .write_obj(0u16, GuestAddress(used_base(q) + 2))
                .unwrap();
        }
        self.avail_idx = [0; 2];
        self.wr(STATUS_REG, 15);
        assert_eq!(self.status(), 15, "device activated");
    }

    fn desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = desc_base(q) + 16 * u64::from(i);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Publishes head `head` on queue `q` and notifies it.
    fn submit(&mut self, q: u16, head: u16) {
        let idx = &mut self.avail_idx[usize::from(q)];
        let slot = u64::from(*idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(avail_base(q) + 4 + 2 * slot))
            .unwrap();
        *idx = idx.wrapping_add(1);
        let idx = *idx;
        self.mem
            .write_obj(idx, GuestAddress(avail_base(q) + 2))
            .unwrap();
        self.wr(QUEUE_NOTIFY, u32::from(q));
    }

    fn used_idx(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(used_base(q) + 2)).unwrap()
    }

    /// Waits until queue `q`'s used index reaches `idx` (true) or the device reports it
    /// needs a reset (false).
    fn wait(&mut self, q: u16, idx: u16) -> bool {
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

    /// A good FUSE INIT on the request queue; returns the reply's error field.
    fn good_init(&mut self) -> i32 {
        self.unique += 1;
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: 31,
            max_readahead: 0,
            flags: 0,
        };
        let header = InHeader {
            len: (size_of::<InHeader>() + size_of::<InitIn>()) as u32,
            opcode: Opcode::Init as u32,
            unique: self.unique,
            ..Default::default()
        };
        let mut req = header.as_slice().to_vec();
        req.extend_from_slice(init.as_slice());
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        self.desc(REQUEST_Q, 0, REQ, req.len() as u32, F_NEXT, 1);
        self.desc(REQUEST_Q, 1, REPLY, REPLY_LEN, F_WRITE, 0);
        let want = self.used_idx(REQUEST_Q).wrapping_add(1);
        self.submit(REQUEST_Q, 0);
        assert!(self.wait(REQUEST_Q, want), "good INIT served");
        let out: OutHeader = self.mem.read_obj(GuestAddress(REPLY)).unwrap();
        assert_eq!(out.unique, self.unique);
        out.error
    }
}

#[test]
fn hostile_rings_and_messages_never_take_virtio_fs_or_the_vmm_down() {
    let mut g = Guest::new();
    // Notifications and register garbage before any set-up.
    for v in [0, 1, 2, 7, u32::MAX] {
        g.wr(QUEUE_NOTIFY, v);
    }
    for off in (0..0x100).step_by(4) {
        g.wr(off, 0xdead_beef);
    }
    g.init();
    assert_eq!(g.good_init(), 0);

    // A plausible request header at REQ for the chains below to point at.
    let header = InHeader {
        len: size_of::<InHeader>() as u32 + 2,
        opcode: Opcode::Lookup as u32,
        unique: 999,
        nodeid: 1,
        ..Default::default()
    };
    g.mem.write_obj(header, GuestAddress(REQ)).unwrap();
    g.mem.write_slice(b"x\0", GuestAddress(REQ + 40)).unwrap();
    let req_len = size_of::<InHeader>() as u32 + 2;

    // Per-request garbage, on both queues: each fails alone, the device stays up.
    let cases: Vec<Vec<(u64, u32, u16, u16)>> = vec![
        // loop: 0 -> 1 -> 0
        vec![
            (REQ, req_len, F_NEXT, 1),
            (REPLY, REPLY_LEN, F_NEXT | F_WRITE, 0),
        ],
        // reply outside guest memory, huge length
        vec![
            (REQ, req_len, F_NEXT, 1),
            (MEM as u64 - 100, u32::MAX - 64, F_WRITE, 0),
        ],
        // request at the top of the address space
        vec![
            (u64::MAX - 4, req_len, F_NEXT, 1),
            (REPLY, REPLY_LEN, F_WRITE, 0),
        ],
        // wrong directions: request writable, reply readable
        vec![
            (REQ, req_len, F_NEXT | F_WRITE, 1),
            (REPLY, REPLY_LEN, 0, 0),
        ],
        // zero lengths
        vec![(REQ, 0, F_NEXT, 1), (REPLY, 0, F_WRITE, 0)],
        // next index beyond the table
        vec![(REQ, req_len, F_NEXT, 999)],
        // header too short
        vec![(REQ, 8, F_NEXT, 1), (REPLY, REPLY_LEN, F_WRITE, 0)],
        // an indirect table outside guest memory
        vec![(1 << 40, 64, F_INDIRECT, 0)],
        // a garbage FUSE header: the descriptor table itself as the request
        vec![
            (desc_base(REQUEST_Q), 256, F_NEXT, 1),
            (REPLY, REPLY_LEN, F_WRITE, 0),
        ],
    ];
    for q in [0, REQUEST_Q] {
        for chain in &cases {
            // The chain lives at descriptors 4.. so the good request (0-1) can follow.
            for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
                let next = if next < QSIZE { next + 4 } else { next };
                g.desc(q, 4 + i as u16, addr, len, flags, next);
            }
            let want = g.used_idx(q).wrapping_add(1);
            g.submit(q, 4);
            assert!(
                g.wait(q, want),
                "queue {q}: bad chain {chain:x?} was answered"
            );
            assert_eq!(
                g.good_init(),
                0,
                "still serving after {chain:x?} on queue {q}"
            );
        }
    }

    // Ring-level garbage breaks the device (DEVICE_NEEDS_RESET), not the VMM; a reset and
    // a fresh set-up bring it back.
    for hostile in ["head index beyond the queue", "avail index far ahead"] {
        match hostile {
            "head index beyond the queue" => g.submit(REQUEST_Q, 200),
            _ => {
                let far = g.avail_idx[usize::from(REQUEST_Q)].wrapping_add(1000);
                g.mem
                    .write_obj(far, GuestAddress(avail_base(REQUEST_Q) + 2))
                    .unwrap();
                g.wr(QUEUE_NOTIFY, u32::from(REQUEST_Q));
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
        assert_eq!(g.good_init(), 0, "served again after a reset ({hostile})");
    }
}
