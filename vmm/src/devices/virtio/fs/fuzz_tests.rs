//! Garbage FUSE messages over the queue: whatever the guest sends, every chain comes back
//! in the used ring and nothing panics. A fixed seed keeps failures reproducible; a failure
//! names the seed and the round.

use std::mem::size_of;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{InHeader, InitIn, Opcode, OutHeader, KERNEL_VERSION};
use virtio_queue::QueueT;
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::handler::RequestHandler;
use super::FsConfig;
use crate::devices::virtio::test_utils::{guest_memory, seeded, Buf, Replay, TestQueue};

const QSIZE: u16 = 256;
const REQ: u64 = 0x10_0000;
const REPLY: u64 = 0x20_0000;
/// The seed of the random FUSE messages.
const SEED: u64 = 0x5eed_cafe_f00d_d00d;

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
fn request(req_len: u32, reply_len: u32) -> [Buf; 2] {
    [Buf::readable(REQ, req_len), Buf::writable(REPLY, reply_len)]
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
    let mem = guest_memory(0x100_0000);
    let mut tq = TestQueue::new(&mem, 0, QSIZE);
    let mut queue = tq.queue();
    let mut rng = seeded(SEED);
    let mut replay = Replay::new(SEED);
    // Chains returned without a reply, with a successful reply, with an error reply.
    let mut outcomes = [0u32; 3];

    let init = InitIn {
        major: KERNEL_VERSION,
        minor: 31,
        max_readahead: 0x2_0000,
        flags: 0,
    };
    for round in 0..4000u32 {
        replay.round = u64::from(round);
        // Every few rounds a proper INIT, so the file system has a root to work on.
        let (opcode, body) = if round % 500 == 0 {
            (Opcode::Init as u32, init.as_slice().to_vec())
        } else {
            let opcode = match rng.u32(..10) {
                0 => rng.u32(..),
                _ => rng.u32(..52),
            };
            // Random bytes, or zeros (small flags, modes and handles get further).
            let mut body: Vec<u8> = if rng.bool() {
                let mut b = vec![0; rng.usize(..200)];
                rng.fill(&mut b);
                b
            } else {
                vec![0; rng.usize(..72)]
            };
            // Often a NUL-terminated short name, as most requests end with one.
            if rng.bool() {
                body.extend_from_slice(&[b'n', b'0' + rng.u8(..4), 0]);
            }
            (opcode, body)
        };
        let full_len = (size_of::<InHeader>() + body.len()) as u32;
        let len = match rng.u32(..8) {
            0 => rng.u32(..),
            1 => rng.u32(..=full_len),
            _ => full_len,
        };
        let nodeid = match rng.u32(..8) {
            0 => rng.u64(..),
            _ => rng.u64(..6),
        };
        let mut req = header(opcode, u64::from(round), nodeid, len)
            .as_slice()
            .to_vec();
        req.extend_from_slice(&body);
        mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let req_len = match rng.u32(..10) {
            0 => rng.u32(..=req.len() as u32),
            _ => req.len() as u32,
        };
        let reply_len = match rng.u32(..10) {
            0 => rng.u32(..64),
            _ => 0x1_0000,
        };
        let head = tq.add(&request(req_len, reply_len));
        h.process_queue(&mut queue, &mem).unwrap();
        let used_total = round as u16 + 1;
        assert_eq!(
            tq.used_idx(),
            used_total,
            "{replay}: opcode {opcode} was not completed"
        );
        assert_eq!(queue.next_avail(), used_total, "{replay}");
        let (id, used_len) = tq.last_used().unwrap();
        assert_eq!(id, u32::from(head), "{replay}");
        let out: OutHeader = mem.read_obj(GuestAddress(REPLY)).unwrap();
        match (used_len, out.error) {
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
        "seed {SEED:#x}: dropped {dropped}, succeeded {succeeded}, refused {refused}"
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
    let mem = guest_memory(0x100_0000);
    let mut tq = TestQueue::new(&mem, 0, 16);
    let mut queue = tq.queue();
    for opcode in [0u32, 7, 19] {
        let req = header(opcode, 100 + opcode as u64, 1, size_of::<InHeader>() as u32);
        mem.write_obj(req, GuestAddress(REQ)).unwrap();
        tq.add(&request(size_of::<InHeader>() as u32, 4096));
        h.process_queue(&mut queue, &mem).unwrap();
        let (_, used_len) = tq.last_used().unwrap();
        assert_eq!(used_len as usize, size_of::<OutHeader>());
        let out: OutHeader = mem.read_obj(GuestAddress(REPLY)).unwrap();
        assert_eq!(
            (out.error, out.unique),
            (-libc::ENOSYS, 100 + opcode as u64)
        );
    }
}
