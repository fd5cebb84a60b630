//! A hostile driver against virtio-fs over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers, rings and FUSE
//! messages in guest memory). Garbage before set-up, descriptor loops, out-of-range
//! addresses and lengths, wrong directions, zero lengths and garbage FUSE headers on both
//! queues: each request fails alone and a good FUSE request is served right after. Ring
//! garbage makes the device report DEVICE_NEEDS_RESET; after a reset it serves again.

mod common;

use std::mem::size_of;

use common::{Layout, F_INDIRECT, F_NEXT, F_WRITE};
use fuse_backend_rs::abi::fuse_abi::{InHeader, InitIn, Opcode, OutHeader, KERNEL_VERSION};
use runv_vmm::devices::virtio::fs::{Fs, FsConfig};
use runv_vmm::devices::virtio::mmio::QUEUE_NOTIFY;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

/// Both queues (hiprio and requests), rings of queue q at 0x1_0000 + q * 0x4000:
/// descriptors, then avail, then used.
const LAYOUT: Layout = Layout {
    mem: 0x40_0000,
    base: 0x1_0000,
    stride: 0x4000,
    queues: 2,
    qsize: 16,
};
const REQ: u64 = 0x10_0000;
const REPLY: u64 = 0x20_0000;
const REPLY_LEN: u32 = 0x1_0000;
/// The request queue (0 is hiprio).
const REQUEST_Q: u16 = 1;

/// The shared directory and the FUSE request counter.
struct Share {
    unique: u64,
    _dir: TempDir,
}

type Guest = common::Guest<Share>;

/// virtio-fs sharing a directory with one file, initialised by [`common::Driver::init`].
fn guest() -> Guest {
    let dir = TempDir::new_with_prefix("/tmp/runv-fs-hostile-").unwrap();
    std::fs::write(dir.as_path().join("file"), b"data").unwrap();
    let cfg: FsConfig = format!("tag=hostile,path={}", dir.as_path().display())
        .parse()
        .unwrap();
    let share = Share {
        unique: 0,
        _dir: dir,
    };
    let device = Box::new(Fs::new(&cfg).unwrap());
    Guest::new("virtio-fs hostile", device, LAYOUT, share)
}

impl Guest {
    /// A good FUSE INIT on the request queue; returns the reply's error field.
    fn good_init(&mut self) -> i32 {
        self.res.unique += 1;
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: 31,
            max_readahead: 0,
            flags: 0,
        };
        let header = InHeader {
            len: (size_of::<InHeader>() + size_of::<InitIn>()) as u32,
            opcode: Opcode::Init as u32,
            unique: self.res.unique,
            ..Default::default()
        };
        let mut req = header.as_slice().to_vec();
        req.extend_from_slice(init.as_slice());
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        self.desc(REQUEST_Q, 0, REQ, req.len() as u32, F_NEXT, 1);
        self.desc(REQUEST_Q, 1, REPLY, REPLY_LEN, F_WRITE, 0);
        assert!(self.submit_and_wait(REQUEST_Q, 0), "good INIT served");
        let out: OutHeader = self.mem.read_obj(GuestAddress(REPLY)).unwrap();
        assert_eq!(out.unique, self.res.unique);
        out.error
    }
}

#[test]
fn hostile_rings_and_messages_never_take_virtio_fs_or_the_vmm_down() {
    let mut g = guest();
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
            (LAYOUT.mem as u64 - 100, u32::MAX - 64, F_WRITE, 0),
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
            (g.desc_table(REQUEST_Q), 256, F_NEXT, 1),
            (REPLY, REPLY_LEN, F_WRITE, 0),
        ],
    ];
    for q in [0, REQUEST_Q] {
        for chain in &cases {
            // The chain lives at descriptors 4.. so the good request (0-1) can follow.
            g.chain(q, 4, chain);
            assert!(
                g.submit_and_wait(q, 4),
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
            _ => g.runaway_avail_index(REQUEST_Q),
        }
        g.wait_needs_reset(&format!("{hostile}: no DEVICE_NEEDS_RESET"));
        g.init();
        assert_eq!(g.good_init(), 0, "served again after a reset ({hostile})");
    }
}
