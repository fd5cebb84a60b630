use super::*;
use crate::devices::virtio::test_utils::vsock::{get_hdr, guest_hdr as guest, put_hdr, GUEST_CID};
use crate::devices::virtio::test_utils::{
    desc as d, guest_memory, RawDescriptor, TestQueue, F_NEXT as NEXT, F_WRITE as WRITE,
};
use crate::devices::virtio::vsock::packet::Op;
use crate::devices::virtio::vsock::{uds, HOST_CID};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use vm_memory::{Bytes, GuestAddress, VolatileSlice};

const CID: u64 = GUEST_CID;
const QSIZE: u16 = 16;
const HDR: u32 = PKT_HEADER_SIZE as u32;

/// A muxer on a socket in a fresh directory (removed at the end), and guest memory.
struct Rig {
    dir: tempfile::TempDir,
    mem: GuestMemoryMmap,
    muxer: Muxer,
    log: LogLimiter,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix(&format!("runv-vh-{name}-"))
            .tempdir()
            .unwrap();
        let muxer = Muxer::new(CID, &dir.path().join("v.sock")).unwrap();
        Rig {
            dir,
            mem: guest_memory(0x10_0000),
            muxer,
            log: LogLimiter::new(),
        }
    }
}

#[test]
fn a_request_to_a_closed_port_is_answered_with_rst() {
    let mut r = Rig::new("rst");
    let txq_mock = TestQueue::new(&r.mem, 0, QSIZE);
    let rxq_mock = TestQueue::new(&r.mem, 0x4000, QSIZE);
    put_hdr(&r.mem, 0x1_0000, &guest(Op::Request, 1000, 77, 0));
    txq_mock.add_raw(&[d(0x1_0000, HDR, 0, 0)], 0);
    let mut txq: Queue = txq_mock.queue();
    let mut rxq: Queue = rxq_mock.queue();
    assert!(process_tx(&mut txq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    assert_eq!(txq_mock.used(), [(0, 0)]);
    // No RX buffer yet: the RST waits.
    assert!(!process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    rxq_mock.add_raw(
        &[
            d(0x2_0000, HDR, WRITE | NEXT, 1),
            d(0x3_0000, 4096, WRITE, 0),
        ],
        0,
    );
    assert!(process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    assert_eq!(rxq_mock.used(), [(0, HDR)]);
    let h = get_hdr(&r.mem, 0x2_0000);
    assert_eq!(h.op(), Some(Op::Rst));
    assert_eq!(
        (h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (HOST_CID, CID, 77, 1000)
    );
    assert!(!r.muxer.has_pending_rx());
}

#[test]
fn data_reaches_the_host_and_comes_back_in_one_descriptor_buffers() {
    let mut r = Rig::new("data");
    let listener = UnixListener::bind(uds::port_path(&r.dir.path().join("v.sock"), 80)).unwrap();
    let txq_mock = TestQueue::new(&r.mem, 0, QSIZE);
    let rxq_mock = TestQueue::new(&r.mem, 0x4000, QSIZE);
    put_hdr(&r.mem, 0x1_0000, &guest(Op::Request, 1000, 80, 0));
    put_hdr(&r.mem, 0x1_1000, &guest(Op::Rw, 1000, 80, 5));
    r.mem.write_slice(b"hello", GuestAddress(0x1_2000)).unwrap();
    txq_mock.add_raw(
        &[
            d(0x1_0000, HDR, 0, 0),
            d(0x1_1000, HDR, NEXT, 2),
            d(0x1_2000, 5, 0, 0),
        ],
        0,
    );
    let mut txq: Queue = txq_mock.queue();
    process_tx(&mut txq, &r.mem, &mut r.muxer, &mut r.log).unwrap();
    assert_eq!(txq_mock.used(), [(0, 0), (1, 0)]);
    let (mut host, _) = listener.accept().unwrap();
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");

    host.write_all(b"world").unwrap();
    for _ in 0..4 {
        r.muxer.process_host_events().unwrap();
    }
    // Linux 6.2+ posts header and data in one descriptor.
    rxq_mock.add_raw(
        &[
            d(0x2_0000, HDR + 4096, WRITE, 0),
            d(0x3_0000, HDR + 4096, WRITE, 0),
        ],
        0,
    );
    let mut rxq: Queue = rxq_mock.queue();
    process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap();
    let u = rxq_mock.used();
    assert_eq!(u[0], (0, HDR));
    assert_eq!(get_hdr(&r.mem, 0x2_0000).op(), Some(Op::Response));
    assert_eq!(u[1], (1, HDR + 5));
    assert_eq!(get_hdr(&r.mem, 0x3_0000).op(), Some(Op::Rw));
    let mut b = [0u8; 5];
    r.mem
        .read_slice(&mut b, GuestAddress(0x3_0000 + u64::from(HDR)))
        .unwrap();
    assert_eq!(&b, b"world");
}

#[test]
fn malformed_tx_chains_are_dropped_without_harm() {
    let mut r = Rig::new("badtx");
    let good = guest(Op::Rw, 1000, 80, 100);
    let huge = guest(Op::Rw, 1000, 80, MAX_PKT_DATA + 1);
    put_hdr(&r.mem, 0x1_0000, &good);
    put_hdr(&r.mem, 0x1_1000, &huge);
    let cases: Vec<(&str, Vec<RawDescriptor>)> = vec![
        ("zero-length header", vec![d(0x1_0000, 0, 0, 0)]),
        ("header too short", vec![d(0x1_0000, 20, 0, 0)]),
        ("header out of memory", vec![d(0xffff_0000_0000, HDR, 0, 0)]),
        (
            "header wraps the address space",
            vec![d(u64::MAX - 8, HDR, 0, 0)],
        ),
        ("write-only header", vec![d(0x1_0000, HDR, WRITE, 0)]),
        ("data missing", vec![d(0x1_0000, HDR, 0, 0)]),
        (
            "data out of memory",
            vec![d(0x1_0000, HDR, NEXT, 1), d(0xffff_0000_0000, 100, 0, 0)],
        ),
        (
            "data shorter than len",
            vec![d(0x1_0000, HDR, NEXT, 1), d(0x2_0000, 10, 0, 0)],
        ),
        (
            "write-only data",
            vec![d(0x1_0000, HDR, NEXT, 1), d(0x2_0000, 100, WRITE, 0)],
        ),
        (
            "len above the maximum",
            vec![d(0x1_1000, HDR, NEXT, 1), d(0x2_0000, 0x2_0000, 0, 0)],
        ),
        (
            "next index out of the table",
            vec![d(0x1_0000, HDR, NEXT, 200)],
        ),
        (
            "descriptor loop",
            vec![d(0x1_0000, HDR, NEXT, 1), d(0x1_0000, HDR, NEXT, 0)],
        ),
    ];
    for (what, descs) in cases {
        let vq = TestQueue::new(&r.mem, 0, QSIZE);
        vq.add_raw(&descs, 0);
        let mut q: Queue = vq.queue();
        assert!(
            process_tx(&mut q, &r.mem, &mut r.muxer, &mut r.log).unwrap(),
            "{what}"
        );
        assert_eq!(vq.used(), [(0, 0)], "{what}");
        // Nothing reached a connection; at most a RST for the unknown port.
        assert_eq!(r.muxer.connection_count(), 0, "{what}");
        let mut buf = [0u8; 64];
        while let Some(h) = r.muxer.recv_pkt(&VolatileSlice::from(&mut buf[..])) {
            assert_eq!(h.op(), Some(Op::Rst), "{what}");
        }
    }
}

/// Makes the muxer owe the guest a RST.
fn send_unknown_rw(r: &mut Rig) {
    let mut d = [1u8; 1];
    let h = guest(Op::Rw, 1, 2, 1);
    r.muxer.send_pkt(&h, Some(&VolatileSlice::from(&mut d[..])));
    assert!(r.muxer.has_pending_rx());
}

#[test]
fn hostile_ring_indexes_are_skipped_or_break_the_device() {
    let mut r = Rig::new("idx");
    // A head index beyond the queue: no used slot to return it to, so it is skipped.
    let vq = TestQueue::new(&r.mem, 0, QSIZE);
    vq.mock().avail().ring().ref_at(0).unwrap().store(200);
    vq.mock().avail().idx().store(1);
    let mut q: Queue = vq.queue();
    assert!(!process_tx(&mut q, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    // An avail index far ahead of the ring: a broken ring, so the device stops (and the
    // guest sees DEVICE_NEEDS_RESET) rather than sitting idle.
    let vq = TestQueue::new(&r.mem, 0x4000, QSIZE);
    vq.mock().avail().idx().store(1000);
    let mut q: Queue = vq.queue();
    let e = process_tx(&mut q, &r.mem, &mut r.muxer, &mut r.log).unwrap_err();
    assert!(matches!(e, Error::Ring { queue: "tx", .. }), "{e}");
    send_unknown_rw(&mut r);
    assert!(process_rx(&mut q, &r.mem, &mut r.muxer, &mut r.log).is_err());
}

#[test]
fn malformed_rx_chains_are_returned_and_the_packet_waits_for_a_good_one() {
    let mut r = Rig::new("badrx");
    put_hdr(&r.mem, 0x1_0000, &guest(Op::Request, 1000, 77, 0));
    let txm = TestQueue::new(&r.mem, 0, QSIZE);
    txm.add_raw(&[d(0x1_0000, HDR, 0, 0)], 0);
    let mut txq: Queue = txm.queue();
    process_tx(&mut txq, &r.mem, &mut r.muxer, &mut r.log).unwrap();

    let rxm = TestQueue::new(&r.mem, 0x4000, QSIZE);
    rxm.add_raw(
        &[
            // read-only header
            d(0x2_0000, HDR, NEXT, 1),
            d(0x3_0000, 4096, WRITE, 0),
            // header only, no room for data
            d(0x2_0000, HDR, WRITE, 0),
            // outside guest memory
            d(0xffff_0000_0000, HDR, WRITE | NEXT, 4),
            d(0x3_0000, 4096, WRITE, 0),
            // data buffer above the maximum packet size
            d(0x2_0000, HDR, WRITE | NEXT, 6),
            d(0x3_0000, MAX_PKT_DATA + 1, WRITE, 0),
            // finally a good one
            d(0x2_0000, HDR, WRITE | NEXT, 8),
            d(0x3_0000, 4096, WRITE, 0),
        ],
        0,
    );
    let mut rxq: Queue = rxm.queue();
    assert!(process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    assert_eq!(rxm.used(), [(0, 0), (2, 0), (3, 0), (5, 0), (7, HDR)]);
    assert_eq!(get_hdr(&r.mem, 0x2_0000).op(), Some(Op::Rst));
}

#[test]
fn the_device_serves_its_queues_on_the_event_loop() {
    use crate::devices::virtio::test_utils::Activation;
    use crate::devices::virtio::vsock::VsockDevice;
    use crate::devices::virtio::VirtioDevice;
    use std::time::{Duration, Instant};

    let r = Rig::new("dev");
    let uds = r.dir.path().join("dev.sock");
    let mut dev = VsockDevice::new(CID, &uds).unwrap();
    let el = crate::event_loop::EventLoop::start().unwrap();
    let rxm = TestQueue::new(&r.mem, 0, QSIZE);
    let txm = TestQueue::new(&r.mem, 0x4000, QSIZE);
    let evm = TestQueue::new(&r.mem, 0x8000, QSIZE);
    rxm.add_raw(
        &[
            d(0x2_0000, HDR, WRITE | NEXT, 1),
            d(0x3_0000, 4096, WRITE, 0),
        ],
        0,
    );
    let act = Activation::new(&r.mem, vec![rxm.queue(), txm.queue(), evm.queue()], &el);
    let (kick_tx, interrupt) = (&act.kicks[TX_QUEUE], act.interrupt.clone());
    dev.activate(act.args).unwrap();

    // A host client asks for guest port 5000: the REQUEST lands in the RX queue.
    let mut client = std::os::unix::net::UnixStream::connect(&uds).unwrap();
    client.write_all(b"CONNECT 5000\n").unwrap();
    let t0 = Instant::now();
    while rxm.used_idx() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no REQUEST");
        std::thread::sleep(Duration::from_millis(5));
    }
    let req = get_hdr(&r.mem, 0x2_0000);
    assert_eq!((req.op(), req.dst_port), (Some(Op::Request), 5000));
    assert_eq!(interrupt.irqfd().read().unwrap(), 1);

    // The guest accepts through the TX queue; the client reads its OK line.
    put_hdr(
        &r.mem,
        0x1_0000,
        &guest(Op::Response, 5000, req.src_port, 0),
    );
    txm.add_raw(&[d(0x1_0000, HDR, 0, 0)], 0);
    kick_tx.write(1).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = [0u8; 14];
    client.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK 1073741824\n");

    // Reset drops the connection; the client sees EOF. Dropping removes the socket.
    dev.reset();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(dev);
    assert!(!uds.exists());
}

#[test]
fn with_event_idx_avail_event_follows_the_device() {
    let mut r = Rig::new("evidx");
    let txm = TestQueue::new(&r.mem, 0, QSIZE);
    let rxm = TestQueue::new(&r.mem, 0x4000, QSIZE);
    put_hdr(&r.mem, 0x1_0000, &guest(Op::Request, 1000, 77, 0));
    txm.add_raw(&[d(0x1_0000, HDR, 0, 0), d(0x1_0000, HDR, 0, 0)], 0);
    let mut txq: Queue = txm.queue();
    let mut rxq: Queue = rxm.queue();
    txq.set_event_idx(true);
    rxq.set_event_idx(true);
    assert!(process_tx(&mut txq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    // The driver is asked to notify when it adds chain number 2.
    assert_eq!(txm.avail_event(), 2);
    // Two RSTs and no RX buffer: starved; notify us about the first buffer.
    assert!(!process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    assert_eq!(rxm.avail_event(), 0);
    rxm.add_raw(
        &[
            d(0x2_0000, HDR, WRITE | NEXT, 1),
            d(0x3_0000, 4096, WRITE, 0),
        ],
        0,
    );
    assert!(process_rx(&mut rxq, &r.mem, &mut r.muxer, &mut r.log).unwrap());
    assert_eq!(rxm.avail_event(), 1);
    assert!(r.muxer.has_pending_rx());
}
