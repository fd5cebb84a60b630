//! A hostile driver against virtio-vsock over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers and rings in
//! guest memory). Notifications before set-up, descriptor loops, out-of-range addresses
//! and lengths, wrong directions, bad indexes in both the TX and the RX queue: the VMM
//! keeps serving, the device at worst reports DEVICE_NEEDS_RESET, and after a reset a
//! good exchange works again.

mod common;

use common::{Driver, Rings, F_NEXT, F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::mmio::QUEUE_NOTIFY;
use vmm::devices::virtio::vsock::{Op, VsockDevice, HOST_CID, TYPE_STREAM};

const MEM: usize = 0x10_0000;
const QSIZE: u16 = 16;
const RX: u16 = 0;
const TX: u16 = 1;
/// Descriptor table, avail and used ring of queue q at 0x1000 + q * 0x3000.
const RINGS: Rings = Rings {
    base: 0x1000,
    stride: 0x3000,
};
const TX_HDR: u64 = 0x1_0000;
const TX_DATA: u64 = 0x2_0000;
const RX_HDR: u64 = 0x3_0000;
const RX_DATA: u64 = 0x4_0000;
const HDR_LEN: u32 = 44;
const CID: u64 = 3;

/// The directory of the host socket, removed at the end.
struct SockDir(std::path::PathBuf);

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Guest = common::Guest<SockDir>;

impl Guest {
    /// Three queues (RX, TX, event) of QSIZE, initialised by [`Driver::init`].
    fn new() -> Guest {
        let dir = std::env::temp_dir().join(format!("runv-vsock-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = Driver::new(
            "virtio-vsock hostile",
            Box::new(VsockDevice::new(CID, &dir.join("v.sock")).unwrap()),
            MEM,
            RINGS,
            3,
            QSIZE,
        );
        Guest {
            d,
            res: SockDir(dir),
        }
    }

    fn tx_header(&self, op: Op, dst_port: u32, len: u32) {
        let h = [
            &CID.to_le_bytes()[..],
            &HOST_CID.to_le_bytes(),
            &1000u32.to_le_bytes(),
            &dst_port.to_le_bytes(),
            &len.to_le_bytes(),
            &TYPE_STREAM.to_le_bytes(),
            &(op as u16).to_le_bytes(),
            &0u32.to_le_bytes(),
            &65536u32.to_le_bytes(),
            &0u32.to_le_bytes(),
        ]
        .concat();
        self.mem.write_slice(&h, GuestAddress(TX_HDR)).unwrap();
    }

    /// A REQUEST to a host port nobody listens on, with an RX buffer ready: the device
    /// must consume the TX chain and answer RST in the RX buffer.
    fn good_exchange(&mut self) {
        self.mem.write_obj(0u16, GuestAddress(RX_HDR + 30)).unwrap();
        self.desc(RX, 0, RX_HDR, HDR_LEN, F_WRITE | F_NEXT, 1);
        self.desc(RX, 1, RX_DATA, 4096, F_WRITE, 0);
        let rx_want = self.used_idx(RX).wrapping_add(1);
        self.submit(RX, 0);
        self.tx_header(Op::Request, 77, 0);
        self.desc(TX, 0, TX_HDR, HDR_LEN, 0, 0);
        let tx_want = self.used_idx(TX).wrapping_add(1);
        self.submit(TX, 0);
        assert!(self.wait(TX, tx_want), "good TX chain served");
        assert!(self.wait(RX, rx_want), "RST delivered");
        let op: u16 = self.mem.read_obj(GuestAddress(RX_HDR + 30)).unwrap();
        assert_eq!(op, Op::Rst as u16);
    }
}

type Chain = Vec<(u64, u32, u16, u16)>;

#[test]
fn hostile_rings_never_take_vsock_or_the_vmm_down() {
    let mut g = Guest::new();
    for v in [0, 1, 2, 3, 7, u32::MAX] {
        g.wr(QUEUE_NOTIFY, v);
    }
    g.init();
    g.good_exchange();

    // TX garbage: each chain is consumed, the device stays up.
    g.tx_header(Op::Rw, 77, 100);
    let tx_cases: Vec<Chain> = vec![
        vec![(TX_HDR, HDR_LEN, F_NEXT, 1), (TX_DATA, 100, F_NEXT, 0)],
        vec![
            (TX_HDR, HDR_LEN, F_NEXT, 1),
            (MEM as u64 - 10, u32::MAX, 0, 0),
        ],
        vec![(TX_HDR, HDR_LEN, F_WRITE, 0)],
        vec![(TX_HDR, HDR_LEN, F_NEXT, 1), (TX_DATA, 100, F_WRITE, 0)],
        vec![(TX_HDR, 0, F_NEXT, 1), (TX_DATA, 0, 0, 0)],
        vec![(TX_HDR, 10, 0, 0)],
        vec![(TX_HDR, HDR_LEN, F_NEXT, 999)],
        vec![(u64::MAX - 4, HDR_LEN, 0, 0)],
        vec![(TX_HDR, HDR_LEN, F_NEXT, 1), (TX_DATA, 10, 0, 0)],
    ];
    for chain in &tx_cases {
        for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
            g.desc(TX, i as u16, addr, len, flags, next);
        }
        let want = g.used_idx(TX).wrapping_add(1);
        g.submit(TX, 0);
        assert!(g.wait(TX, want), "bad TX chain {chain:x?} was consumed");
        g.good_exchange();
    }

    // RX garbage: each buffer is returned unused, the RST waits for a good one.
    let rx_cases: Vec<Chain> = vec![
        vec![(RX_HDR, HDR_LEN, F_NEXT, 1), (RX_DATA, 4096, F_WRITE, 0)],
        vec![(RX_HDR, HDR_LEN, F_WRITE, 0)],
        vec![
            (u64::MAX - 4, HDR_LEN, F_WRITE | F_NEXT, 1),
            (RX_DATA, 4096, F_WRITE, 0),
        ],
        vec![
            (RX_HDR, HDR_LEN, F_WRITE | F_NEXT, 1),
            (RX_DATA, u32::MAX, F_WRITE, 0),
        ],
        vec![
            (RX_HDR, HDR_LEN, F_WRITE | F_NEXT, 1),
            (RX_DATA, 4096, F_WRITE | F_NEXT, 0),
        ],
    ];
    for chain in &rx_cases {
        for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
            g.desc(RX, i as u16 + 2, addr, len, flags, next + 2);
        }
        let want = g.used_idx(RX).wrapping_add(1);
        g.submit(RX, 2);
        // Make the device want to send: a REQUEST to an unknown port.
        g.tx_header(Op::Request, 78, 0);
        g.desc(TX, 0, TX_HDR, HDR_LEN, 0, 0);
        let tx_want = g.used_idx(TX).wrapping_add(1);
        g.submit(TX, 0);
        assert!(g.wait(TX, tx_want));
        assert!(g.wait(RX, want), "bad RX chain {chain:x?} was returned");
        g.good_exchange();
    }

    // A head index beyond the queue is skipped; an avail index far ahead breaks the
    // device (DEVICE_NEEDS_RESET), not the VMM; a reset brings it back.
    g.submit(TX, 200);
    g.good_exchange();
    let far = g.avail_idx[usize::from(TX)].wrapping_add(1000);
    g.mem.write_obj(far, GuestAddress(g.avail(TX) + 2)).unwrap();
    g.wr(QUEUE_NOTIFY, u32::from(TX));
    g.wait_needs_reset("no DEVICE_NEEDS_RESET");
    g.init();
    g.good_exchange();
}
