//! A hostile driver against virtio-vsock over the real virtio-mmio transport and the real
//! device event loop (no KVM: the test plays the guest, writing registers and rings in
//! guest memory). Notifications before set-up, descriptor loops, out-of-range addresses
//! and lengths, wrong directions, bad indexes in both the TX and the RX queue: the VMM
//! keeps serving, the device at worst reports DEVICE_NEEDS_RESET, and after a reset a
//! good exchange works again.

mod common;

use common::{Layout, F_NEXT, F_WRITE};
use runv_vmm::devices::virtio::mmio::QUEUE_NOTIFY;
use runv_vmm::devices::virtio::vsock::{Op, VsockDevice};
use vm_memory::{Bytes, GuestAddress};

/// Three queues (RX, TX, event): descriptor table, avail and used ring of queue q at
/// 0x1000 + q * 0x3000.
const LAYOUT: Layout = Layout::small(3);
const RX: u16 = 0;
const TX: u16 = 1;
const TX_HDR: u64 = 0x1_0000;
const TX_DATA: u64 = 0x2_0000;
const RX_HDR: u64 = 0x3_0000;
const RX_DATA: u64 = 0x4_0000;
const HDR_LEN: u32 = 44;
const CID: u64 = 3;

/// Keeps the directory of the host socket until the end.
type Guest = common::Guest<tempfile::TempDir>;

/// virtio-vsock with its socket in a fresh directory, initialised by
/// [`common::Driver::init`].
fn guest() -> Guest {
    Guest::in_temp_dir("virtio-vsock hostile", LAYOUT, |dir| {
        Box::new(VsockDevice::new(CID, &dir.join("v.sock")).unwrap())
    })
}

impl Guest {
    fn tx_header(&self, op: Op, dst_port: u32, len: u32) {
        let h = common::vsock_hdr(op, 1000, dst_port, len, 65536);
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
        self.request_unknown_port(77);
        assert!(self.wait(RX, rx_want), "RST delivered");
        let op: u16 = self.mem.read_obj(GuestAddress(RX_HDR + 30)).unwrap();
        assert_eq!(op, Op::Rst as u16);
    }

    /// A REQUEST to a host port nobody listens on, on TX: the device consumes it and owes
    /// the guest a RST.
    fn request_unknown_port(&mut self, port: u32) {
        self.tx_header(Op::Request, port, 0);
        self.desc(TX, 0, TX_HDR, HDR_LEN, 0, 0);
        assert!(self.submit_and_wait(TX, 0), "good TX chain served");
    }
}

type Chain = Vec<(u64, u32, u16, u16)>;

#[test]
fn hostile_rings_never_take_vsock_or_the_vmm_down() {
    let mut g = guest();
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
            (LAYOUT.mem as u64 - 10, u32::MAX, 0, 0),
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
        g.chain(TX, 0, chain);
        assert!(
            g.submit_and_wait(TX, 0),
            "bad TX chain {chain:x?} was consumed"
        );
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
        g.chain(RX, 2, chain);
        let want = g.used_idx(RX).wrapping_add(1);
        g.submit(RX, 2);
        // Make the device want to send: a REQUEST to an unknown port.
        g.request_unknown_port(78);
        assert!(g.wait(RX, want), "bad RX chain {chain:x?} was returned");
        g.good_exchange();
    }

    // A head index beyond the queue is skipped; an avail index far ahead breaks the
    // device (DEVICE_NEEDS_RESET), not the VMM; a reset brings it back.
    g.submit(TX, 200);
    g.good_exchange();
    g.runaway_avail_index(TX);
    g.wait_needs_reset("no DEVICE_NEEDS_RESET");
    g.init();
    g.good_exchange();
}
