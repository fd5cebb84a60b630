//! virtio-net queue handling against mock queues and a SEQPACKET socketpair standing in
//! for the tap (one read or write = one frame, as on a tap): no KVM, no root.

use super::handler::{NetHandler, NetQueues, NetStats, Wake, TX_BUDGET};
use super::tap::FrameFd;
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::devices::virtio::test_utils::{desc, guest_memory, Buf, TestQueue, F_NEXT, F_WRITE};
use crate::devices::virtio::{GuestMemoryMmap, Interrupt};
use crate::event_loop::EventSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub(super) const MEM_SIZE: usize = 0x40_0000;
/// The queues, far enough apart for 512 entries each (`26 * size + 12` bytes).
const RXQ: u64 = 0;
const TXQ: u64 = 0x8000;
/// Guest buffers start here.
pub(super) const BUF: u64 = 0x1_0000;

/// A connected, non-blocking SEQPACKET pair: (device end, host end).
pub(super) fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the two-element array it is given.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Sends one datagram on the host end.
pub(super) fn host_send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is a live buffer of frame.len() bytes, only read.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// Receives one datagram on the host end, if one is there.
pub(super) fn host_recv(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_PACKET_LEN + 16];
    // SAFETY: `buf` is a live, writable buffer of buf.len() bytes.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A frame as the tap hands it over: a 12-byte header (flags 0, num_buffers garbage, as
/// the tap leaves it) and `len` bytes of payload `seed, seed+1, ...`.
pub(super) fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f[10] = 0xee;
    f[11] = 0xee;
    f.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
    f
}

/// Caps the bytes `fd` may have in flight (the kernel doubles the value).
pub(super) fn set_sndbuf(fd: RawFd, bytes: libc::c_int) {
    // SAFETY: SO_SNDBUF reads one int from the pointer, which points to `bytes`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

/// A [`NetHandler`] on two [`TestQueue`]s, with the host end of its frame fd.
pub(super) struct Fx<'m> {
    mem: &'m GuestMemoryMmap,
    dev_fd: RawFd,
    rxq: TestQueue<'m>,
    txq: TestQueue<'m>,
    pub(super) h: NetHandler,
    pub(super) host: OwnedFd,
    stats: Arc<NetStats>,
    irq: Arc<Interrupt>,
}

pub(super) fn mem() -> GuestMemoryMmap {
    guest_memory(MEM_SIZE)
}

/// Guest page `i` of the buffer area, where the tests put one buffer each.
pub(super) fn page(i: u64) -> u64 {
    BUF + i * 0x1000
}

impl<'m> Fx<'m> {
    /// On one end of a SEQPACKET pair, the other end being [`Fx::host`].
    fn new(mem: &'m GuestMemoryMmap, size: u16, mrg_rxbuf: bool) -> Self {
        let (dev, host) = socketpair();
        Self::on(mem, size, mrg_rxbuf, Arc::new(FrameFd::new(dev)), host)
    }

    /// On `frames` (a socket, a tap), `host` being what the tests send and receive on.
    pub(super) fn on(
        mem: &'m GuestMemoryMmap,
        size: u16,
        mrg_rxbuf: bool,
        frames: Arc<FrameFd>,
        host: OwnedFd,
    ) -> Self {
        let rxq = TestQueue::new(mem, RXQ, size);
        let txq = TestQueue::new(mem, TXQ, size);
        let dev_fd = frames.as_raw_fd();
        let stats = Arc::new(NetStats::default());
        let irq = Arc::new(Interrupt::for_tests().unwrap());
        let h = NetHandler::new(
            "virtio-net test".into(),
            mem.clone(),
            NetQueues {
                rx: rxq.queue(),
                tx: txq.queue(),
                rx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                tx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            },
            frames,
            irq.clone(),
            mrg_rxbuf,
            stats.clone(),
        );
        Fx {
            mem,
            dev_fd,
            rxq,
            txq,
            h,
            host,
            stats,
            irq,
        }
    }

    /// Posts one device-writable buffer of `len` bytes on each of `pages` ([`page`]), a
    /// chain each; returns their heads.
    pub(super) fn post_rx_pages(&mut self, pages: std::ops::Range<u64>, len: u32) -> Vec<u16> {
        pages.map(|i| self.post_rx(&[(page(i), len)])).collect()
    }

    /// Posts `segs` (address, length) as one device-writable chain; returns its head.
    pub(super) fn post_rx(&mut self, segs: &[(u64, u32)]) -> u16 {
        let bufs: Vec<Buf> = segs.iter().map(|&(a, l)| Buf::writable(a, l)).collect();
        self.rxq.add(&bufs)
    }

    /// Writes `data` over `segs` in guest memory and posts them as one tx chain.
    pub(super) fn post_tx(&mut self, segs: &[(u64, u32)], data: &[u8]) -> u16 {
        let mut off = 0;
        for &(addr, len) in segs {
            let n = (len as usize).min(data.len() - off);
            self.mem
                .write_slice(&data[off..off + n], GuestAddress(addr))
                .unwrap();
            off += n;
        }
        assert_eq!(off, data.len(), "the segments hold the frame");
        let bufs: Vec<Buf> = segs.iter().map(|&(a, l)| Buf::readable(a, l)).collect();
        self.txq.add(&bufs)
    }

    pub(super) fn rx_used(&self) -> Vec<(u32, u32)> {
        self.rxq.used()
    }

    pub(super) fn tx_used(&self) -> Vec<(u32, u32)> {
        self.txq.used()
    }

    /// Whether the interrupt fired since the last call.
    fn irq(&self) -> bool {
        self.irq.irqfd().read().is_ok()
    }

    pub(super) fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    fn stat(&self, f: impl Fn(&NetStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }
}

/// `f` with num_buffers set to `n`, as the guest must see it.
fn with_num_buffers(f: &[u8], n: u16) -> Vec<u8> {
    let mut f = f.to_vec();
    f[10..12].copy_from_slice(&n.to_le_bytes());
    f
}

#[test]
fn rx_one_frame_into_one_buffer() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    let head = fx.post_rx(&[(BUF, 2048)]);
    let f = frame(100, 1);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.rx_used(), vec![(u32::from(head), 112)]);
    assert_eq!(fx.read(BUF, 112), with_num_buffers(&f, 1));
    assert!(fx.irq());
    assert_eq!(fx.stat(|s| &s.rx_frames), 1);
    assert_eq!(fx.stat(|s| &s.rx_bytes), 100);
    // The only buffer is used: the tap is not watched until the driver posts more.
    assert!(fx.h.rx_starved());
    assert_eq!(fx.h.wanted_tap_events(), EventSet::empty());
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert!(!fx.irq());
}

#[test]
fn rx_header_and_frame_spread_over_descriptors() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    fx.post_rx(&[(BUF, 4), (BUF + 0x1000, 10), (BUF + 0x2000, 500)]);
    let f = frame(300, 7);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.rx_used(), vec![(0, 312)]);
    let mut got = fx.read(BUF, 4);
    got.extend(fx.read(BUF + 0x1000, 10));
    got.extend(fx.read(BUF + 0x2000, 298));
    assert_eq!(got, with_num_buffers(&f, 1));
}

#[test]
fn rx_merged_buffers_carry_num_buffers() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, true);
    let heads = fx.post_rx_pages(0..4, 1000);
    let f = frame(2500, 3);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    let want: Vec<(u32, u32)> = vec![
        (heads[0].into(), 1000),
        (heads[1].into(), 1000),
        (heads[2].into(), 512),
    ];
    assert_eq!(fx.rx_used(), want);
    let mut got = fx.read(BUF, 1000);
    got.extend(fx.read(BUF + 0x1000, 1000));
    got.extend(fx.read(BUF + 0x2000, 512));
    assert_eq!(got, with_num_buffers(&f, 3));
    // The fourth buffer takes the next frame alone.
    let g = frame(50, 9);
    host_send(&fx.host, &g);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.rx_used()[3], (heads[3].into(), 62));
    assert_eq!(fx.read(BUF + 0x3000, 62), with_num_buffers(&g, 1));
}

#[test]
fn rx_largest_frame_fits_merged_page_buffers() {
    let m = mem();
    let mut fx = Fx::new(&m, 32, true);
    fx.post_rx_pages(0..20, 4096);
    let f = frame(MAX_PACKET_LEN - VNET_HDR_LEN, 5);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    let used = fx.rx_used();
    assert_eq!(used.len(), 17, "65562 bytes in 4 KiB buffers");
    assert_eq!(used.iter().map(|u| u.1 as usize).sum::<usize>(), f.len());
    assert_eq!(fx.read(BUF, f.len()), with_num_buffers(&f, 17));
}

#[test]
fn rx_with_an_empty_ring_stops_watching_the_tap_and_resumes_after_notify() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    let (f, g) = (frame(60, 1), frame(70, 2));
    host_send(&fx.host, &f);
    host_send(&fx.host, &g);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert!(fx.h.rx_starved());
    assert_eq!(fx.h.wanted_tap_events(), EventSet::empty());
    assert!(fx.rx_used().is_empty() && !fx.irq());
    // A stale readiness event changes nothing: the frames stay in the tap.
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert!(fx.h.rx_starved());
    assert_eq!(fx.stat(|s| &s.rx_frames), 0);
    // The driver posts buffers and notifies.
    fx.post_rx_pages(0..3, 1526);
    fx.h.process(Wake::RxQueue).unwrap();
    assert!(!fx.h.rx_starved());
    assert_eq!(fx.h.wanted_tap_events(), EventSet::IN);
    assert_eq!(fx.rx_used(), vec![(0, 72), (1, 82)]);
    assert_eq!(fx.read(BUF, 72), with_num_buffers(&f, 1));
    assert_eq!(fx.read(BUF + 0x1000, 82), with_num_buffers(&g, 1));
    assert!(fx.irq());
}

#[test]
fn rx_a_frame_waits_for_enough_merged_buffers() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, true);
    fx.post_rx(&[(BUF, 1000)]);
    let f = frame(2500, 4);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert!(fx.h.rx_starved(), "one buffer is not enough: wait for more");
    assert!(fx.rx_used().is_empty());
    fx.post_rx(&[(BUF + 0x1000, 1000)]);
    fx.h.process(Wake::RxQueue).unwrap();
    assert!(fx.h.rx_starved() && fx.rx_used().is_empty());
    fx.post_rx(&[(BUF + 0x2000, 1000)]);
    fx.h.process(Wake::RxQueue).unwrap();
    assert_eq!(fx.rx_used(), vec![(0, 1000), (1, 1000), (2, 512)]);
    assert_eq!(fx.read(BUF, 1000)[..12], with_num_buffers(&f, 3)[..12]);
    // Delivered: the tap is watched again, and is empty.
    assert_eq!(
        fx.h.wanted_tap_events(),
        EventSet::empty(),
        "no buffer left"
    );
}

#[test]
fn rx_a_frame_larger_than_the_buffer_is_dropped_and_the_buffer_kept() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    fx.post_rx(&[(BUF, 100)]);
    host_send(&fx.host, &frame(500, 1));
    let g = frame(50, 2);
    host_send(&fx.host, &g);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.stat(|s| &s.rx_dropped), 1);
    assert_eq!(
        fx.rx_used(),
        vec![(0, 62)],
        "the small frame took the buffer"
    );
    assert_eq!(fx.read(BUF, 62), with_num_buffers(&g, 1));
}

#[test]
fn rx_a_frame_larger_than_a_full_ring_of_merged_buffers_is_dropped() {
    let m = mem();
    let mut fx = Fx::new(&m, 4, true);
    fx.post_rx_pages(0..4, 64);
    host_send(&fx.host, &frame(1000, 1));
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.stat(|s| &s.rx_dropped), 1);
    assert_eq!(fx.rx_used(), vec![], "the buffers stay for the next frame");
    assert!(!fx.h.rx_starved());
    let g = frame(100, 2);
    host_send(&fx.host, &g);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.rx_used(), vec![(0, 64), (1, 48)]);
}

#[test]
fn rx_short_and_oversized_datagrams_are_dropped() {
    let m = mem();
    let mut fx = Fx::new(&m, 32, true);
    fx.post_rx_pages(0..20, 4096);
    host_send(&fx.host, &[1, 2, 3]);
    host_send(&fx.host, &vec![0u8; MAX_PACKET_LEN + 1]);
    let g = frame(10, 1);
    host_send(&fx.host, &g);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    assert_eq!(fx.stat(|s| &s.rx_dropped), 2);
    assert_eq!(fx.rx_used(), vec![(0, 22)]);
}

#[test]
fn rx_hostile_chains_are_returned_empty_and_the_next_buffer_is_used() {
    let m = mem();
    let mut fx = Fx::new(&m, 32, false);
    let out = MEM_SIZE as u64 - 8;
    let bad = [
        // A device-readable buffer.
        Buf::readable(BUF, 2048),
        // Outside guest RAM (straddling its end).
        Buf::writable(out, 64),
        // Zero length.
        Buf::writable(BUF, 0),
        // Shorter than the header.
        Buf::writable(BUF, 11),
    ];
    let mut heads: Vec<u16> = bad.iter().map(|b| fx.rxq.add(&[*b])).collect();
    // A loop: the descriptor points at itself.
    let looped = fx.rxq.reserve(1);
    fx.rxq
        .add_raw(&[desc(BUF, 2048, F_WRITE | F_NEXT, looped)], looped);
    heads.push(looped);
    let good = fx.post_rx(&[(BUF + 0x1000, 2048)]);
    let f = frame(40, 8);
    host_send(&fx.host, &f);
    fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
    let mut want: Vec<(u32, u32)> = heads.iter().map(|&h| (h.into(), 0)).collect();
    want.push((good.into(), 52));
    assert_eq!(fx.rx_used(), want);
    assert_eq!(fx.stat(|s| &s.rx_bad_chains), 5);
    assert_eq!(fx.read(BUF + 0x1000, 52), with_num_buffers(&f, 1));
}

#[test]
fn tx_one_chain_is_one_frame_on_the_tap() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    let f = frame(100, 3);
    let head = fx.post_tx(&[(BUF, 12), (BUF + 0x1000, 100)], &f);
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(host_recv(&fx.host).unwrap(), f);
    assert!(host_recv(&fx.host).is_none());
    assert_eq!(fx.tx_used(), vec![(head.into(), 0)]);
    assert!(fx.irq());
    assert_eq!(fx.stat(|s| &s.tx_frames), 1);
    assert_eq!(fx.stat(|s| &s.tx_bytes), 100);
    // An empty ring: nothing used, no interrupt.
    fx.h.process(Wake::TxQueue).unwrap();
    assert!(!fx.irq());
}

#[test]
fn tx_several_chains_keep_their_order() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(60 + i * 100, i as u8)).collect();
    for (i, f) in frames.iter().enumerate() {
        let at = BUF + i as u64 * 0x1000;
        fx.post_tx(&[(at, f.len() as u32)], f);
    }
    fx.h.process(Wake::TxQueue).unwrap();
    for f in &frames {
        assert_eq!(&host_recv(&fx.host).unwrap(), f);
    }
    assert_eq!(fx.tx_used().len(), 5);
    assert!(fx.tx_used().iter().all(|u| u.1 == 0));
}

#[test]
fn tx_eagain_stops_and_resumes_when_the_tap_is_writable() {
    let m = mem();
    let mut fx = Fx::new(&m, 256, false);
    // Room for a handful of frames in flight, whatever net.unix.max_dgram_qlen says.
    set_sndbuf(fx.dev_fd, 8192);
    let total = 100;
    for i in 0..total {
        let f = frame(1000, i as u8);
        fx.post_tx(&[(BUF + i as u64 * 0x1000, f.len() as u32)], &f);
    }
    fx.h.process(Wake::TxQueue).unwrap();
    assert!(
        fx.h.tx_blocked(),
        "the socket's queue fills before 100 frames"
    );
    assert_eq!(fx.h.wanted_tap_events(), EventSet::IN | EventSet::OUT);
    let sent = fx.tx_used().len();
    assert!(sent > 0 && sent < total, "{sent}");
    assert_eq!(fx.stat(|s| &s.tx_frames), sent as u64);
    // A notification while blocked does not retry (no spinning on EAGAIN).
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(fx.tx_used().len(), sent);
    let mut got = Vec::new();
    let mut rounds = 0;
    while got.len() < total {
        while let Some(f) = host_recv(&fx.host) {
            got.push(f);
        }
        fx.h.process(Wake::Tap(EventSet::OUT)).unwrap();
        rounds += 1;
        assert!(rounds < 100, "tx does not make progress");
    }
    assert_eq!(fx.tx_used().len(), total);
    assert!(!fx.h.tx_blocked());
    assert_eq!(fx.h.wanted_tap_events(), EventSet::IN);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &frame(1000, i as u8), "frame {i} in order, once");
    }
}

#[test]
fn tx_hostile_chains_are_returned_empty_and_the_device_goes_on() {
    let m = mem();
    let mut fx = Fx::new(&m, 64, false);
    let out = MEM_SIZE as u64 - 8;
    let bad: [&[Buf]; 5] = [
        // A device-writable descriptor.
        &[Buf::readable(BUF, 12), Buf::writable(BUF + 0x1000, 100)],
        // Outside guest RAM.
        &[Buf::readable(out, 100)],
        // Zero length.
        &[Buf::readable(BUF, 0)],
        // Shorter than the header.
        &[Buf::readable(BUF, 8)],
        // Larger than the largest frame: 65563 bytes.
        &[
            Buf::readable(BUF, 40000),
            Buf::readable(BUF + 0x10000, 25563),
        ],
    ];
    let mut heads: Vec<u16> = bad.iter().map(|c| fx.txq.add(c)).collect();
    // A loop: the descriptor points at itself.
    let looped = fx.txq.reserve(1);
    fx.txq.add_raw(&[desc(BUF, 100, F_NEXT, looped)], looped);
    heads.push(looped);
    // The largest frame is fine.
    let big = frame(MAX_PACKET_LEN - VNET_HDR_LEN, 1);
    let big_head = fx.post_tx(&[(0x10_0000, 40000), (0x20_0000, 25562)], &big);
    let f = frame(64, 2);
    let good = fx.post_tx(&[(BUF + 0x2_0000, f.len() as u32)], &f);
    fx.h.process(Wake::TxQueue).unwrap();
    let mut want: Vec<(u32, u32)> = heads.iter().map(|&h| (h.into(), 0)).collect();
    want.push((big_head.into(), 0));
    want.push((good.into(), 0));
    assert_eq!(fx.tx_used(), want);
    assert_eq!(fx.stat(|s| &s.tx_bad_chains), 6);
    assert_eq!(host_recv(&fx.host).unwrap(), big);
    assert_eq!(host_recv(&fx.host).unwrap(), f);
    assert!(host_recv(&fx.host).is_none());
}

#[test]
fn tx_work_per_wake_up_is_bounded_and_resumes_by_itself() {
    let m = mem();
    let mut fx = Fx::new(&m, 512, false);
    let n = TX_BUDGET + 44;
    for i in 0..n {
        // Refused chains (device-writable) do not fill the socket.
        fx.txq.add(&[Buf::writable(BUF + i as u64 * 16, 16)]);
    }
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(fx.tx_used().len(), TX_BUDGET);
    // The handler signalled its own tx eventfd, so the loop comes back.
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(fx.tx_used().len(), n);
}

#[test]
fn a_head_index_beyond_the_queue_is_skipped() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    // The avail ring names descriptor 300 of a 16-entry table.
    fx.txq.publish(300);
    let f = frame(20, 1);
    fx.post_tx(&[(BUF, f.len() as u32)], &f);
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(fx.tx_used(), vec![(0, 0)], "only the real chain is used");
    assert_eq!(host_recv(&fx.host).unwrap(), f);
}

#[test]
fn a_corrupt_ring_stops_the_device() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    // An avail index more than a queue ahead of the device.
    fx.txq.mock().avail().idx().store(100);
    assert!(fx.h.process(Wake::TxQueue).is_err());
    fx.rxq.mock().avail().idx().store(100);
    host_send(&fx.host, &frame(10, 0));
    assert!(fx.h.process(Wake::Tap(EventSet::IN)).is_err());
}

#[test]
fn a_closed_tap_stops_the_device() {
    let m = mem();
    let mut fx = Fx::new(&m, 16, false);
    fx.post_rx(&[(BUF, 2048)]);
    let host = std::mem::replace(&mut fx.host, socketpair().0);
    drop(host);
    assert!(fx.h.process(Wake::Tap(EventSet::IN)).is_err(), "EOF");
    assert!(fx
        .h
        .process(Wake::Tap(EventSet::IN | EventSet::HANG_UP))
        .is_err());
}
