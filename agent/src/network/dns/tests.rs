//! The relay against a host played by threads: each `connect` gives a Unix socket
//! pair whose other end a thread serves, behaving by the query's first question
//! byte (offset 12): `A` answers, `S` stays silent, `B` blocks until released, `C`
//! closes without answering.

use super::*;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;

#[derive(Default)]
struct HostStats {
    connects: AtomicUsize,
    current: AtomicUsize,
    peak: AtomicUsize,
    release: AtomicBool,
}

struct FakeHost(Arc<HostStats>);

fn answer_of(q: &[u8]) -> Vec<u8> {
    let mut a = q.to_vec();
    a[2] |= 0x80; // QR: a response
    a.extend_from_slice(b"answer");
    a
}

fn play_host(stats: &HostStats, mut s: UnixStream) {
    let Ok(Some(q)) = read_framed(&mut s) else {
        return;
    };
    match q[DNS_HEADER] {
        b'S' => std::thread::sleep(Duration::from_secs(3)),
        b'C' => {}
        b'B' => {
            let now = stats.current.fetch_add(1, Ordering::SeqCst) + 1;
            stats.peak.fetch_max(now, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(10);
            while !stats.release.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            stats.current.fetch_sub(1, Ordering::SeqCst);
            let _ = write_framed(&mut s, &answer_of(&q));
        }
        _ => {
            let _ = write_framed(&mut s, &answer_of(&q));
        }
    }
}

impl Connect for FakeHost {
    type Stream = UnixStream;
    fn connect(&self) -> io::Result<UnixStream> {
        self.0.connects.fetch_add(1, Ordering::SeqCst);
        let (a, b) = UnixStream::pair()?;
        let stats = self.0.clone();
        std::thread::spawn(move || play_host(&stats, b));
        Ok(a)
    }
}

struct Refusing;

impl Connect for Refusing {
    type Stream = UnixStream;
    fn connect(&self) -> io::Result<UnixStream> {
        Err(io::ErrorKind::ConnectionRefused.into())
    }
}

fn limits() -> Limits {
    Limits {
        max_in_flight: 4,
        query_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
    }
}

fn relay(limits: Limits) -> (Relay<FakeHost>, Arc<HostStats>) {
    let stats = Arc::new(HostStats::default());
    let r = start(
        "127.0.0.1:0".parse().unwrap(),
        FakeHost(stats.clone()),
        limits,
    )
    .unwrap();
    (r, stats)
}

fn query(id: u16, tag: u8, len: usize) -> Vec<u8> {
    let mut q = vec![0u8; len.max(DNS_HEADER + 1)];
    q[..2].copy_from_slice(&id.to_be_bytes());
    q[DNS_HEADER] = tag;
    q
}

fn udp_client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    c
}

/// The answer to one UDP query, or `None` if none came within the client's timeout.
fn udp_ask(relay: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let c = udp_client();
    c.send_to(q, relay).unwrap();
    let mut buf = vec![0u8; 70000];
    c.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn udp_query_is_relayed_and_answered() {
    let (r, stats) = relay(limits());
    let q = query(0x1234, b'A', 40);
    assert_eq!(udp_ask(r.address, &q), Some(answer_of(&q)));
    assert_eq!(stats.connects.load(Ordering::SeqCst), 1);
    wait_for("the slot back", || r.in_flight() == 0);
}

#[test]
fn tcp_queries_are_relayed_in_order_on_one_connection() {
    let (r, stats) = relay(limits());
    let mut c = TcpStream::connect(r.address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q1 = query(1, b'A', 30);
    let q2 = query(2, b'A', 3000); // over UDP's limit, fine on TCP
    write_framed(&mut c, &q1).unwrap();
    write_framed(&mut c, &q2).unwrap();
    assert_eq!(read_framed(&mut c).unwrap(), Some(answer_of(&q1)));
    assert_eq!(read_framed(&mut c).unwrap(), Some(answer_of(&q2)));
    assert_eq!(stats.connects.load(Ordering::SeqCst), 2);
    drop(c);
    wait_for("the slot back", || r.in_flight() == 0);
}

#[test]
fn oversize_and_runt_udp_datagrams_are_dropped() {
    let (r, stats) = relay(limits());
    assert_eq!(udp_ask(r.address, &query(1, b'A', MAX_UDP_QUERY + 1)), None);
    assert_eq!(udp_ask(r.address, &[1, 2, 3, 4, 5]), None);
    assert_eq!(
        stats.connects.load(Ordering::SeqCst),
        0,
        "nothing went to the host"
    );
    let q = query(2, b'A', MAX_UDP_QUERY);
    assert_eq!(udp_ask(r.address, &q), Some(answer_of(&q)));
}

#[test]
fn a_silent_host_times_out_and_the_relay_goes_on() {
    let (r, stats) = relay(limits());
    assert_eq!(udp_ask(r.address, &query(1, b'S', 20)), None);
    wait_for("the slot back", || r.in_flight() == 0);
    // Over TCP the client's connection is closed once the exchange times out.
    let mut c = TcpStream::connect(r.address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write_framed(&mut c, &query(2, b'S', 20)).unwrap();
    let start = Instant::now();
    assert_eq!(read_framed(&mut c).unwrap(), None);
    assert!(start.elapsed() < Duration::from_secs(2));
    // A host that hangs up without answering.
    assert_eq!(udp_ask(r.address, &query(3, b'C', 20)), None);
    let q = query(4, b'A', 20);
    assert_eq!(udp_ask(r.address, &q), Some(answer_of(&q)));
    assert_eq!(stats.connects.load(Ordering::SeqCst), 4);
    wait_for("the slots back", || r.in_flight() == 0);
}

#[test]
fn an_unreachable_host_is_survived() {
    let r = start("127.0.0.1:0".parse().unwrap(), Refusing, limits()).unwrap();
    assert_eq!(udp_ask(r.address, &query(1, b'A', 20)), None);
    let mut c = TcpStream::connect(r.address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write_framed(&mut c, &query(2, b'A', 20)).unwrap();
    assert_eq!(read_framed(&mut c).unwrap(), None);
    wait_for("the slots back", || r.in_flight() == 0);
}

#[test]
fn queries_in_flight_are_bounded() {
    let (r, stats) = relay(Limits {
        query_timeout: Duration::from_secs(5),
        ..limits()
    });
    let c = udp_client();
    for id in 0..10 {
        c.send_to(&query(id, b'B', 20), r.address).unwrap();
    }
    wait_for("four blocked exchanges", || {
        stats.current.load(Ordering::SeqCst) == 4
    });
    // A TCP connection needs a place too: it is closed at once.
    let mut t = TcpStream::connect(r.address).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(t.read(&mut [0u8; 1]).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stats.connects.load(Ordering::SeqCst), 4);
    stats.release.store(true, Ordering::SeqCst);
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while c.recv(&mut buf).is_ok() {
        answered += 1;
    }
    assert_eq!(answered, 4);
    assert_eq!(stats.peak.load(Ordering::SeqCst), 4);
    wait_for("the slots back", || r.in_flight() == 0);
    let q = query(99, b'A', 20);
    assert_eq!(udp_ask(r.address, &q), Some(answer_of(&q)));
}

#[test]
fn bad_tcp_clients_are_closed() {
    let (r, stats) = relay(limits());
    // A zero length, a message shorter than a DNS header, a frame cut short.
    for bytes in [&[0u8, 0][..], &[0, 3, 1, 2, 3], &[0, 40, 1, 2]] {
        let mut c = TcpStream::connect(r.address).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(bytes).unwrap();
        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "{bytes:?}");
    }
    // An idle client is closed after the idle time.
    let mut c = TcpStream::connect(r.address).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let start = Instant::now();
    assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0);
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(stats.connects.load(Ordering::SeqCst), 0);
    wait_for("the slots back", || r.in_flight() == 0);
    let q = query(1, b'A', 20);
    assert_eq!(udp_ask(r.address, &q), Some(answer_of(&q)));
}

#[test]
fn warnings_are_limited_per_kind() {
    let w = WarnLimiter::new(Duration::from_secs(3600));
    assert!(w.warn(Warn::Oversize, format_args!("first")));
    assert!(!w.warn(Warn::Oversize, format_args!("second")));
    assert!(!w.warn(Warn::Oversize, format_args!("third")));
    assert_eq!(
        w.held_back[Warn::Oversize as usize].load(Ordering::Relaxed),
        2
    );
    assert!(w.warn(Warn::Busy, format_args!("another kind")));
    let w = WarnLimiter::new(Duration::ZERO);
    assert!(w.warn(Warn::Host, format_args!("a")));
    assert!(w.warn(Warn::Host, format_args!("b")));
}

#[test]
fn framing_is_dns_over_tcp() {
    let mut out = Vec::new();
    write_framed(&mut out, b"abc").unwrap();
    assert_eq!(out, [0, 3, b'a', b'b', b'c']);
    assert_eq!(read_framed(&mut &out[..]).unwrap(), Some(b"abc".to_vec()));
    assert_eq!(read_framed(&mut &[][..]).unwrap(), None);
    assert!(read_framed(&mut &[0u8][..]).is_err());
    assert!(read_framed(&mut &[0u8, 5, 1][..]).is_err());
    assert!(read_framed(&mut &[0u8, 0][..]).is_err());
    assert!(write_framed(&mut Vec::new(), &vec![0u8; 65536]).is_err());
    let mut max = Vec::new();
    write_framed(&mut max, &vec![7u8; 65535]).unwrap();
    assert_eq!(&max[..2], &[0xff, 0xff]);
}

#[test]
#[ignore = "needs root: unshare(CLONE_NEWNET)"]
fn root_the_relay_serves_127_0_0_11_port_53_once_lo_is_up() {
    crate::network::tests::in_new_netns(|| {
        crate::network::loopback_up().unwrap();
        let stats = Arc::new(HostStats::default());
        let address: SocketAddr = "127.0.0.11:53".parse().unwrap();
        let r = start(address, FakeHost(stats.clone()), limits()).unwrap();
        assert_eq!(r.address, address);
        let q = query(7, b'A', 30);
        assert_eq!(udp_ask(address, &q), Some(answer_of(&q)));
        let mut c = TcpStream::connect(address).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write_framed(&mut c, &q).unwrap();
        assert_eq!(read_framed(&mut c).unwrap(), Some(answer_of(&q)));
        assert_eq!(stats.connects.load(Ordering::SeqCst), 2);
    });
}
