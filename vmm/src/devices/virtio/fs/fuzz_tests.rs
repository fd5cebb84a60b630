//! Garbage FUSE messages over the queue: whatever the guest sends, every chain comes back
//! in the used ring and nothing panics. A fixed-seed generator keeps failures reproducible.

use std::mem::size_of;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, InitIn, Opcode, OutHeader, KERNEL_VERSION};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempdir::TempDir;

use super::handler::RequestHandler;
use super::FsConfig;

const QSIZE: u16 = 256;
const REQ: u64 = 0x10_0000;
const REPLY: u64 = 0x20_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn header(opcode: u32, unique: u64, nodeid: u64, len: u32) -> InHeader {
    InHeader {
        len,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    }
}

/// One request chain: the request at REQ, a writable reply buffer at REPLY.
fn chain(base: u16, req_len: u32, reply_len: u32) -> [RawDescriptor; 2] {
    [
        RawDescriptor::from(SplitDescriptor::new(REQ, req_len, F_NEXT, base + 1)),
        RawDescriptor::from(SplitDescriptor::new(REPLY, reply_len, F_WRITE, 0)),
    ]
}

#[test]
fn random_fuse_messages_never_panic_and_always_complete() {
    let dir = TempDir::new_with_prefix("/tmp/runv-virtiofs-fuzz-").unwrap();
    std::fs::write(dir.as_path().join("file"), b"some data").unwrap();
    std::fs::create_dir(dir.as_path().join("sub")).unwrap();
    let cfg = FsConfig {
        tag: "fuzz".into(),
        path: dir.as_path().to_path_buf(),
        read_only: false,
    };
    let mut h = RequestHandler::new(Arc::new(cfg.server().unwrap()), cfg.tag);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
    let mut mock = MockSplitQueue::new(&mem, QSIZE);
    let mut queue = mock.create_queue::<Queue>().unwrap();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut used_total = 0u16;
    // Chains returned without a reply, with a successful reply, with an error reply.
    let mut outcomes = [0u32; 3];

    let init = InitIn {
        major: KERNEL_VERSION,
        minor: 31,
        max_readahead: 0x2_0000,
        flags: 0,
    };
    for round in 0..4000u32 {
        // The mock writes avail entries without wrapping: start a fresh queue (zeroed
        // rings) before it would run past the end of its ring.
        if round % u32::from(QSIZE / 2) == 0 {
            mem.write_slice(&[0u8; 0x1_0000], GuestAddress(0)).unwrap();
            mock = MockSplitQueue::new(&mem, QSIZE);
            queue = mock.create_queue::<Queue>().unwrap();
            used_total = 0;
        }
        // Every few rounds a proper INIT, so the file system has a root to work on.
        let (opcode, body) = if round % 500 == 0 {
            (Opcode::Init as u32, init.as_slice().to_vec())
        } else {
            let opcode = match rng.below(10) {
                0 => rng.next() as u32,
                _ => rng.below(52) as u32,
            };
            // Random bytes, or zeros (small flags, modes and handles get further).
            let mut body: Vec<u8> = if rng.below(2) == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                vec![0; rng.below(72) as usize]
            };
            // Often a NUL-terminated short name, as most requests end with one.
            if rng.below(2) == 0 {
                body.extend_from_slice(&[b'n', b'0' + rng.below(4) as u8, 0]);
            }
            (opcode, body)
        };
        let full_len = (size_of::<InHeader>() + body.len()) as u32;
        let len = match rng.below(8) {
            0 => rng.next() as u32,
            1 => rng.below(u64::from(full_len) + 1) as u32,
            _ => full_len,
        };
        let nodeid = match rng.below(8) {
            0 => rng.next(),
            _ => rng.below(6),
        };
        let mut req = header(opcode, u64::from(round), nodeid, len)
            .as_slice()
            .to_vec();
        req.extend_from_slice(&body);
        mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let req_len = match rng.below(10) {
            0 => rng.below(req.len() as u64 + 1) as u32,
            _ => req.len() as u32,
        };
        let reply_len = match rng.below(10) {
            0 => rng.below(64) as u32,
            _ => 0x1_0000,
        };
        let base = (round % u32::from(QSIZE / 2)) as u16 * 2;
        mock.add_desc_chains(&chain(base, req_len, reply_len), base)
            .unwrap();
        h.process_queue(&mut queue, &mem).unwrap();
        used_total = used_total.wrapping_add(1);
        assert_eq!(
            mock.used().idx().load(),
            used_total,
            "round {round}: opcode {opcode} was not completed"
        );
        assert_eq!(queue.next_avail(), used_total);
        let used = mock
            .used()
            .ring()
            .ref_at(usize::from((used_total - 1) % QSIZE))
            .unwrap()
            .load();
        let out: OutHeader = mem.read_obj(GuestAddress(REPLY)).unwrap();
        match (used.len(), out.error) {
            (0, _) => outcomes[0] += 1,
            (_, 0) => outcomes[1] += 1,
            _ => outcomes[2] += 1,
        }
        // So that a stale reply is never taken for this round's.
        mem.write_slice(&[0xff; size_of::<OutHeader>()], GuestAddress(REPLY))
            .unwrap();
    }
    // The mix reached the file system, not only the decoder: some requests succeeded,
    // many were answered with an error, some could not be answered at all.
    let [dropped, succeeded, refused] = outcomes;
    assert!(
        dropped > 0 && succeeded >= 50 && refused >= 1000,
        "dropped {dropped}, succeeded {succeeded}, refused {refused}"
    );
}

#[test]
fn opcodes_missing_from_the_protocol_get_enosys() {
    let dir = TempDir::new_with_prefix("/tmp/runv-virtiofs-op-").unwrap();
    let cfg = FsConfig {
        tag: "op".into(),
        path: dir.as_path().to_path_buf(),
        read_only: false,
    };
    let mut h = RequestHandler::new(Arc::new(cfg.server().unwrap()), cfg.tag);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
    let mock = MockSplitQueue::new(&mem, 16);
    let mut queue = mock.create_queue::<Queue>().unwrap();
    for (i, opcode) in [0u32, 7, 19].into_iter().enumerate() {
        let req = header(opcode, 100 + opcode as u64, 1, size_of::<InHeader>() as u32);
        mem.write_obj(req, GuestAddress(REQ)).unwrap();
        let base = i as u16 * 2;
        mock.add_desc_chains(&chain(base, size_of::<InHeader>() as u32, 4096), base)
            .unwrap();
        h.process_queue(&mut queue, &mem).unwrap();
        let used = mock.used().ring().ref_at(i).unwrap().load();
        assert_eq!(used.len() as usize, size_of::<OutHeader>());
        let out: OutHeader = mem.read_obj(GuestAddress(REPLY)).unwrap();
        assert_eq!(
            (out.error, out.unique),
            (-libc::ENOSYS, 100 + opcode as u64)
        );
    }
}
