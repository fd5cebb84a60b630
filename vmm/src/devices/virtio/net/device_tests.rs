//! The virtio-net device as a driver sees it (virtio-mmio registers, the event loop),
//! the `--net` option, the tap checks, and one test on a real tap (root only).

use super::device::{tun_offload_flags, Net};
use super::handler::{NetStats, Wake};
use super::tap::{FrameFd, NetBackend, Tap, TapError};
use super::tests::{frame, host_recv, host_send, mem, page, set_sndbuf, socketpair, Fx, BUF};
use super::{MacAddr, NetConfig, VNET_HDR_LEN};
use crate::devices::virtio::mmio::{reg, MmioTransport, CONFIG_SPACE, QUEUE_NOTIFY};
use crate::devices::virtio::test_utils::{Buf, TestQueue};
use crate::devices::virtio::{status, GuestMemoryMmap, Interrupt};
use crate::devices::BusDevice;
use crate::event_loop::{EventLoop, EventSet};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use virtio_bindings::virtio_net::*;
use vm_memory::{Bytes, GuestAddress};

const MAC: MacAddr = MacAddr([0x02, 0, 0, 0x0a, 9, 2]);
const RXQ: u64 = 0x20_0000;
const TXQ: u64 = 0x20_8000;
const QSIZE: u16 = 64;
const WAIT: Duration = Duration::from_secs(5);

fn bit(b: u32) -> u64 {
    1u64 << b
}

#[test]
fn the_net_option_parses_and_bad_values_are_named() {
    let c: NetConfig = "fd=3,mac=02:00:00:0A:09:02,mtu=1400".parse().unwrap();
    assert_eq!(
        c,
        NetConfig {
            fd: 3,
            mac: MAC,
            mtu: Some(1400)
        }
    );
    let c: NetConfig = "mac=02:00:00:0a:09:02,fd=7".parse().unwrap();
    assert_eq!((c.fd, c.mtu), (7, None));
    assert_eq!(MAC.to_string(), "02:00:00:0a:09:02");
    crate::config::options::assert_refused::<NetConfig>(
        &super::OPTION,
        &[
            ("", "empty item"),
            ("mac=02:00:00:0a:09:02", "fd= is missing"),
            ("fd=3", "mac= is missing"),
            (
                "fd=x,mac=02:00:00:0a:09:02",
                "fd=x is invalid: invalid digit",
            ),
            (
                "fd=-1,mac=02:00:00:0a:09:02",
                "fd=-1 is invalid: it is not a file",
            ),
            ("fd=3,mac=02:00:00:0a:09", "six hex pairs"),
            ("fd=3,mac=02:00:00:0a:09:2", "six hex pairs"),
            (
                "fd=3,mac=02:00:00:0a:09:zz",
                "mac=02:00:00:0a:09:zz is invalid: it is not six hex pairs",
            ),
            ("fd=3,mac=02-00-00-0a-09-02", "six hex pairs"),
            (
                "fd=3,mac=03:00:00:0a:09:02",
                "mac=03:00:00:0a:09:02 is invalid: it is a multicast",
            ),
            ("fd=3,mac=ff:ff:ff:ff:ff:ff", "multicast"),
            ("fd=3,mac=00:00:00:00:00:00", "all-zero"),
            (
                "fd=3,mac=02:00:00:0a:09:02,mtu=67",
                "mtu=67 is invalid: it must be between 68 and 65535",
            ),
            (
                "fd=3,mac=02:00:00:0a:09:02,mtu=65536",
                "mtu=65536 is invalid",
            ),
            (
                "fd=3,mac=02:00:00:0a:09:02,mtu=",
                "mtu needs a value, mtu=N",
            ),
            ("fd=3,fd=4,mac=02:00:00:0a:09:02", "fd is given twice"),
            (
                "fd=3,mac=02:00:00:0a:09:02,vhost",
                "unknown key \"vhost\" (expected fd=N,mac=MAC[,mtu=N])",
            ),
        ],
    );
    assert!("fd=3,mac=02:00:00:0a:09:02,mtu=68"
        .parse::<NetConfig>()
        .is_ok());
    assert!("fd=3,mac=02:00:00:0a:09:02,mtu=65535"
        .parse::<NetConfig>()
        .is_ok());
}

#[test]
fn offloads_follow_the_guest_receive_features() {
    use libc::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    let (t4, t6) = (bit(VIRTIO_NET_F_GUEST_TSO4), bit(VIRTIO_NET_F_GUEST_TSO6));
    assert_eq!(tun_offload_flags(0), 0);
    // Host-side offloads (the guest sending) need nothing from the tap.
    assert_eq!(
        tun_offload_flags(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4)),
        0
    );
    assert_eq!(tun_offload_flags(csum), TUN_F_CSUM);
    assert_eq!(tun_offload_flags(csum | t4), TUN_F_CSUM | TUN_F_TSO4);
    assert_eq!(
        tun_offload_flags(csum | t4 | t6),
        TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    );
    // TSO without GUEST_CSUM breaks a feature dependency: no offloads at all.
    assert_eq!(tun_offload_flags(t4 | t6), 0);
}

/// A frame fd that records the offloads it is given.
struct TestBackend {
    frames: Arc<FrameFd>,
    offloads: Arc<Mutex<Vec<u32>>>,
}

impl NetBackend for TestBackend {
    fn frames(&self) -> Arc<FrameFd> {
        self.frames.clone()
    }
    fn set_offload(&self, tun_flags: libc::c_uint) -> std::io::Result<()> {
        self.offloads.lock().unwrap().push(tun_flags);
        Ok(())
    }
}

struct Driver {
    t: MmioTransport,
    host: OwnedFd,
    dev_fd: RawFd,
    offloads: Arc<Mutex<Vec<u32>>>,
    stats: Arc<NetStats>,
    el: EventLoop,
}

fn driver(mem: &GuestMemoryMmap, mtu: Option<u16>) -> Driver {
    let (dev, host) = socketpair();
    let dev_fd = dev.as_raw_fd();
    let offloads = Arc::new(Mutex::new(Vec::new()));
    let backend = TestBackend {
        frames: Arc::new(FrameFd::new(dev)),
        offloads: offloads.clone(),
    };
    let net = Net::with_backend("virtio-net test".into(), Box::new(backend), MAC, mtu);
    let stats = net.stats();
    let el = EventLoop::start().unwrap();
    let t = MmioTransport::new(
        "virtio-net test".into(),
        Box::new(net),
        mem.clone(),
        Arc::new(Interrupt::for_tests().unwrap()),
        el.handle(),
    )
    .unwrap();
    Driver {
        t,
        host,
        dev_fd,
        offloads,
        stats,
        el,
    }
}

impl Driver {
    fn rd(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }
    fn config(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.t.read(CONFIG_SPACE + off, &mut b);
        b
    }
    fn offered(&mut self) -> u64 {
        self.wr(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.rd(reg::DEVICE_FEATURES);
        self.wr(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.rd(reg::DEVICE_FEATURES);
        u64::from(lo) | (u64::from(hi) << 32)
    }
    /// Linux's sequence up to FEATURES_OK; returns the status read back.
    fn negotiate(&mut self, features: u64) -> u32 {
        self.wr(reg::STATUS, 0);
        self.wr(reg::STATUS, status::ACKNOWLEDGE);
        self.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.wr(reg::DRIVER_FEATURES_SEL, 0);
        self.wr(reg::DRIVER_FEATURES, features as u32);
        self.wr(reg::DRIVER_FEATURES_SEL, 1);
        self.wr(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.wr(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.rd(reg::STATUS)
    }
    fn setup_queue(&mut self, index: u32, q: &TestQueue<'_>) {
        self.wr(reg::QUEUE_SEL, index);
        assert_eq!(self.rd(reg::QUEUE_NUM_MAX), 256);
        self.wr(reg::QUEUE_NUM, u32::from(QSIZE));
        let (desc, avail, used) = q.addrs();
        self.wr(reg::QUEUE_DESC_LOW, desc as u32);
        self.wr(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.wr(reg::QUEUE_DEVICE_LOW, used as u32);
        self.wr(reg::QUEUE_READY, 1);
    }
    fn driver_ok(&mut self) {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        self.wr(reg::STATUS, s);
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn features_and_config_space_as_the_driver_reads_them() {
    let m = mem();
    let mut drv = driver(&m, Some(1400));
    assert_eq!(drv.rd(reg::DEVICE_ID), 1);
    let offered = drv.offered();
    // What each feature is for, rather than the device's list again.
    let transport = bit(32) | bit(29); // VERSION_1, RING_F_EVENT_IDX (as blk and vsock)
    let config = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MTU) | bit(VIRTIO_NET_F_STATUS);
    let guest_sends =
        bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6);
    let guest_receives = bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    let want = transport | config | guest_sends | guest_receives;
    assert_eq!(offered, want, "{offered:#x}");
    assert_eq!(offered & bit(VIRTIO_NET_F_CTRL_VQ), 0, "no control queue");
    assert_eq!(drv.config(0, 6), MAC.0);
    assert_eq!(
        drv.config(6, 2),
        (VIRTIO_NET_S_LINK_UP as u16).to_le_bytes()
    );
    assert_eq!(drv.config(10, 2), 1400u16.to_le_bytes());
    // Byte-wise and past the end, as a driver may read.
    assert_eq!(drv.config(3, 1), [0x0a]);
    assert_eq!(drv.config(12, 8), [0; 8]);
    // Writes are ignored: the MAC stays.
    drv.t.write(CONFIG_SPACE, &[9, 9, 9, 9]);
    assert_eq!(drv.config(0, 6), MAC.0);
    // Without mtu= there is no MTU feature, and the field reads 0.
    let mut drv = driver(&m, None);
    assert_eq!(drv.offered() & bit(VIRTIO_NET_F_MTU), 0);
    assert_eq!(drv.config(10, 2), [0, 0]);
    // A legacy driver (no VERSION_1) does not get FEATURES_OK.
    assert_eq!(
        drv.negotiate(bit(VIRTIO_NET_F_MAC)) & status::FEATURES_OK,
        0
    );
}

#[test]
fn a_driver_negotiates_and_frames_flow_both_ways_through_the_event_loop() {
    let m = mem();
    let mut drv = driver(&m, Some(1500));
    let mut rxq = TestQueue::new(&m, RXQ, QSIZE);
    let mut txq = TestQueue::new(&m, TXQ, QSIZE);
    let features = bit(32)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    assert_ne!(drv.negotiate(features) & status::FEATURES_OK, 0);
    drv.setup_queue(0, &rxq);
    drv.setup_queue(1, &txq);
    drv.driver_ok();
    assert!(drv.t.is_activated());
    assert_eq!(status::DEVICE_NEEDS_RESET & drv.rd(reg::STATUS), 0);
    assert_eq!(
        *drv.offloads.lock().unwrap(),
        vec![libc::TUN_F_CSUM | libc::TUN_F_TSO4]
    );

    // A frame arrives before the driver posted buffers: the device waits for them.
    let f = frame(3000, 1);
    host_send(&drv.host, &f);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rxq.used_idx(), 0);
    for i in 0..4u16 {
        let at = BUF + u64::from(i) * 0x1000;
        assert_eq!(rxq.add(&[Buf::writable(at, 1500)]), i);
    }
    drv.wr(QUEUE_NOTIFY, 0);
    wait_until("the frame in the rx ring", || rxq.used_idx() == 3);
    let mut got = Vec::new();
    for (id, len) in rxq.used() {
        let mut b = vec![0u8; len as usize];
        let at = BUF + u64::from(id) * 0x1000;
        m.read_slice(&mut b, GuestAddress(at)).unwrap();
        got.extend(b);
    }
    assert_eq!(got[VNET_HDR_LEN..], f[VNET_HDR_LEN..]);
    assert_eq!(got[10..12], 3u16.to_le_bytes(), "num_buffers");

    // tx, with the socket made small so EAGAIN comes, and EPOLLOUT brings the rest.
    set_sndbuf(drv.dev_fd, 8192);
    let n = 40u16;
    for i in 0..n {
        let g = frame(1000, i as u8);
        let at = 0x10_0000 + u64::from(i) * 0x1000;
        m.write_slice(&g, GuestAddress(at)).unwrap();
        txq.add(&[Buf::readable(at, g.len() as u32)]);
    }
    drv.wr(QUEUE_NOTIFY, 1);
    let mut seen = Vec::new();
    wait_until("every tx frame on the host side", || {
        while let Some(g) = host_recv(&drv.host) {
            seen.push(g);
        }
        seen.len() == usize::from(n)
    });
    let seeds: Vec<u8> = seen.iter().map(|g| g[VNET_HDR_LEN]).collect();
    assert_eq!(seeds, (0..n).map(|i| i as u8).collect::<Vec<_>>());
    for (i, g) in seen.iter().enumerate() {
        assert_eq!(g, &frame(1000, i as u8));
    }
    wait_until("every tx chain used", || txq.used_idx() == n);
    assert_eq!(drv.stats.tx_frames.load(Ordering::Relaxed), u64::from(n));
    assert_eq!(drv.stats.rx_frames.load(Ordering::Relaxed), 1);

    // Reset: the handler goes, the offloads are withdrawn.
    drv.wr(reg::STATUS, 0);
    assert_eq!(drv.el.handle().handler_count(), 0);
    assert_eq!(drv.offloads.lock().unwrap().last(), Some(&0));
}

#[test]
fn activation_without_both_queues_needs_a_reset() {
    let m = mem();
    let mut drv = driver(&m, None);
    let txq = TestQueue::new(&m, TXQ, QSIZE);
    drv.negotiate(bit(32));
    drv.setup_queue(1, &txq);
    drv.driver_ok();
    assert!(!drv.t.is_activated());
    assert_ne!(drv.rd(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(drv.el.handle().handler_count(), 0);
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD touches no memory.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

#[test]
fn a_fd_that_is_not_a_tap_is_refused_and_left_open() {
    let (a, _b) = socketpair();
    let e = Tap::from_inherited_fd(a.as_raw_fd()).unwrap_err();
    assert!(matches!(e, TapError::NotATap { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("--net fd={}: not a tap", a.as_raw_fd())),
        "{e}"
    );
    assert!(is_open(a.as_raw_fd()), "the fd is not ours to close");
    let file = tempfile::tempfile().unwrap();
    let e = Tap::from_inherited_fd(file.as_raw_fd()).unwrap_err();
    assert!(matches!(e, TapError::NotATap { .. }), "{e}");
    // A number nothing is open under (far above what the tests open).
    let e = Tap::from_inherited_fd(999_999).unwrap_err();
    assert!(matches!(e, TapError::NotOpen { .. }), "{e}");
    assert!(e.to_string().contains("--net fd=999999"), "{e}");
    let cfg: NetConfig = "fd=999999,mac=02:00:00:00:00:01".parse().unwrap();
    assert!(Net::new(&cfg).is_err());
}

// ---- a real tap (root) ----

/// Creates tap `name` with `flags` (IFF_* as for TUNSETIFF) in this thread's namespace.
fn open_tap(name: &str, flags: libc::c_int) -> OwnedFd {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    file.into()
}

/// Brings interface `name` up.
fn link_up(name: &str) {
    // SAFETY: socket() touches no memory.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0);
    // SAFETY: `s` was just created and is owned by nobody else.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads and writes one ifreq, which `req` is.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
    assert_eq!(r, 0, "SIOCGIFFLAGS: {}", std::io::Error::last_os_error());
    // SAFETY: SIOCGIFFLAGS filled ifru_flags; reading an integer union member is defined.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads one ifreq, which `req` is.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) };
    assert_eq!(r, 0, "SIOCSIFFLAGS: {}", std::io::Error::last_os_error());
}

/// A non-blocking packet socket that sees every frame on interface `index`.
fn packet_socket(index: u32) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket() touches no memory.
    let s = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(s >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: `s` was just created and is owned by nobody else.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: bind reads a sockaddr_ll of the size given, which `addr` is.
    let r = unsafe {
        libc::bind(
            s.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    s
}

/// An Ethernet frame of the local experimental type 0x88b5, marked with `tag`.
fn eth_frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5]);
    f.extend((0..100).map(|i| tag.wrapping_add(i)));
    f
}

fn root_tap_test_body() {
    // SAFETY: unshare touches no memory; CLONE_NEWNET moves only this thread (spawned
    // for the purpose) into a new network namespace, which goes away with it.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "unshare: {}", std::io::Error::last_os_error());
    let want = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

    // A tap without IFF_VNET_HDR is refused, and stays the caller's.
    let plain = open_tap("rvplain0", libc::IFF_TAP | libc::IFF_NO_PI);
    let e = Tap::from_inherited_fd(plain.as_raw_fd()).unwrap_err();
    assert!(matches!(e, TapError::Flags { .. }), "{e}");
    assert!(e.to_string().contains("rvplain0"), "{e}");
    assert!(is_open(plain.as_raw_fd()));

    let fd = open_tap("rvnet0", want).into_raw_fd();
    link_up("rvnet0");
    // SAFETY: the name is a NUL-terminated literal.
    let index = unsafe { libc::if_nametoindex(c"rvnet0".as_ptr()) };
    assert_ne!(index, 0);
    let raw = packet_socket(index);
    let tap = Tap::from_inherited_fd(fd).unwrap();
    assert_eq!(tap.name(), "rvnet0");
    // SAFETY: F_GETFL touches no memory.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert_ne!(fl & libc::O_NONBLOCK, 0);
    let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    tap.set_offload(all).unwrap();
    tap.set_offload(0).unwrap();

    let m = mem();
    let mut fx = Fx::on(&m, QSIZE, false, tap.frames(), raw);

    // Guest to host: header (no offload) + frame, one writev; the packet socket sees it.
    let out = eth_frame(7);
    let mut pkt = vec![0u8; VNET_HDR_LEN];
    pkt.extend(&out);
    fx.post_tx(&[(BUF, 12), (BUF + 12, out.len() as u32)], &pkt);
    fx.h.process(Wake::TxQueue).unwrap();
    assert_eq!(fx.tx_used().len(), 1);
    let mut seen = false;
    wait_until("the guest's frame on rvnet0", || {
        while let Some(f) = host_recv(&fx.host) {
            seen |= f == out;
        }
        seen
    });

    // Host to guest: a frame sent on rvnet0 comes out of the tap fd into an rx buffer
    // (after whatever the kernel sends on a new link, e.g. IPv6 solicitations).
    let heads = fx.post_rx_pages(0..32, 2048);
    let inbound = eth_frame(9);
    host_send(&fx.host, &inbound);
    let mut found = false;
    wait_until("the host's frame in the rx ring", || {
        fx.h.process(Wake::Tap(EventSet::IN)).unwrap();
        found = fx.rx_used().into_iter().any(|(id, len)| {
            let i = heads.iter().position(|&h| u32::from(h) == id).unwrap();
            let b = fx.read(page(i as u64), len as usize);
            b.len() > VNET_HDR_LEN && b[VNET_HDR_LEN..] == inbound[..] && b[10..12] == [1, 0]
        });
        found
    });
}

#[test]
#[ignore = "needs root: creates a tap"]
fn root_a_real_tap_is_checked_configured_and_carries_frames_both_ways() {
    std::thread::spawn(root_tap_test_body).join().unwrap();
}
