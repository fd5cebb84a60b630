use super::*;
use crate::devices::virtio::test_utils::vsock::{guest_hdr, GUEST_CID};
use crate::devices::virtio::test_utils::{seeded, Replay};
use crate::devices::virtio::vsock::{CONN_BUF_SIZE, SHUTDOWN_RCV, SHUTDOWN_SEND};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

const CID: u64 = GUEST_CID;

/// A directory for the muxer's sockets, removed at the end.
struct Dir(tempfile::TempDir);
impl Dir {
    fn new(name: &str) -> Self {
        let prefix = format!("runv-mux-{name}-");
        Dir(tempfile::Builder::new().prefix(&prefix).tempdir().unwrap())
    }
    fn uds(&self) -> PathBuf {
        self.0.path().join("v.sock")
    }
}

fn pump(m: &mut Muxer) {
    for _ in 0..4 {
        m.process_host_events().unwrap();
    }
}

fn recv_all(m: &mut Muxer) -> Vec<(Hdr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(h) = m.recv_pkt(&VolatileSlice::from(&mut buf[..])) {
        out.push((h, buf[..h.len as usize].to_vec()));
        assert!(out.len() < 100_000);
    }
    out
}

fn guest(op: Op, guest_port: u32, host_port: u32) -> Hdr {
    guest_hdr(op, guest_port, host_port, 0)
}

fn send_data(m: &mut Muxer, guest_port: u32, host_port: u32, data: &[u8]) {
    let mut d = data.to_vec();
    let h = Hdr {
        len: d.len() as u32,
        ..guest(Op::Rw, guest_port, host_port)
    };
    m.send_pkt(&h, Some(&VolatileSlice::from(&mut d[..])));
}

fn ops(pkts: &[(Hdr, Vec<u8>)]) -> Vec<Option<Op>> {
    pkts.iter().map(|(h, _)| h.op()).collect()
}

/// A host client that connected and sent its CONNECT line; returns it and the REQUEST.
fn host_connect(m: &mut Muxer, port: u32) -> (UnixStream, Hdr) {
    let mut c = UnixStream::connect(m.uds_path()).unwrap();
    writeln!(c, "CONNECT {port}").unwrap();
    pump(m);
    let pkts = recv_all(m);
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let req = pkts[0].0;
    assert_eq!(req.op(), Some(Op::Request));
    assert_eq!((req.dst_cid, req.dst_port), (CID, port));
    (c, req)
}

#[test]
fn host_initiated_stream_end_to_end() {
    let dir = Dir::new("h2g");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let (mut client, req) = host_connect(&mut m, 5000);
    assert_eq!(req.src_port, FIRST_LOCAL_PORT);
    m.send_pkt::<()>(&guest(Op::Response, 5000, req.src_port), None);
    let mut line = [0u8; 14];
    client.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK 1073741824\n");

    client.write_all(b"ping").unwrap();
    pump(&mut m);
    let pkts = recv_all(&mut m);
    assert_eq!(ops(&pkts), [Some(Op::Rw)]);
    assert_eq!(pkts[0].1, b"ping");

    send_data(&mut m, 5000, req.src_port, b"pong");
    let mut b = [0u8; 4];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");

    // The guest refuses the next one: the client sees EOF without an OK line.
    let (mut client2, req2) = host_connect(&mut m, 6000);
    assert_ne!(req2.src_port, req.src_port);
    m.send_pkt::<()>(&guest(Op::Rst, 6000, req2.src_port), None);
    assert_eq!(m.connection_count(), 1);
    let mut rest = Vec::new();
    client2.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn guest_initiated_stream_reaches_the_port_listener() {
    let dir = Dir::new("g2h");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let listener = UnixListener::bind(uds::port_path(&dir.uds(), 5001)).unwrap();
    m.send_pkt::<()>(&guest(Op::Request, 1234, 5001), None);
    let pkts = recv_all(&mut m);
    assert_eq!(ops(&pkts), [Some(Op::Response)]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (5001, 1234));
    let (mut host, _) = listener.accept().unwrap();
    send_data(&mut m, 1234, 5001, b"from guest");
    let mut b = [0u8; 10];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"from guest");
    host.write_all(b"from host").unwrap();
    pump(&mut m);
    let pkts = recv_all(&mut m);
    assert_eq!(pkts[0].1, b"from host");

    // Graceful close by the guest: RST confirms, the host sees EOF, the entry goes.
    let shut = Hdr {
        flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
        ..guest(Op::Shutdown, 1234, 5001)
    };
    m.send_pkt::<()>(&shut, None);
    assert_eq!(ops(&recv_all(&mut m)), [Some(Op::Rst)]);
    assert_eq!(m.connection_count(), 0);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn unknown_ports_and_strangers_get_rst_and_nothing_else() {
    let dir = Dir::new("rst");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    // Nothing listens on <uds>_7.
    m.send_pkt::<()>(&guest(Op::Request, 1, 7), None);
    // Data, shutdown, credit for connections that do not exist.
    send_data(&mut m, 2, 8, b"x");
    m.send_pkt::<()>(&guest(Op::Shutdown, 3, 9), None);
    // Another CID, or a datagram type.
    let other_cid = Hdr {
        dst_cid: 7,
        ..guest(Op::Request, 4, 10)
    };
    m.send_pkt::<()>(&other_cid, None);
    let dgram = Hdr {
        type_: 2,
        ..guest(Op::Request, 5, 11)
    };
    m.send_pkt::<()>(&dgram, None);
    // A RST is never answered; a spoofed source CID is dropped.
    m.send_pkt::<()>(&guest(Op::Rst, 6, 12), None);
    let spoofed = Hdr {
        src_cid: 9,
        ..guest(Op::Request, 7, 13)
    };
    m.send_pkt::<()>(&spoofed, None);
    let pkts = recv_all(&mut m);
    assert_eq!(ops(&pkts), [Some(Op::Rst); 5]);
    let ports: Vec<_> = pkts.iter().map(|(h, _)| (h.src_port, h.dst_port)).collect();
    assert_eq!(ports, [(7, 1), (8, 2), (9, 3), (10, 4), (11, 5)]);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn rsts_waiting_for_rx_buffers_are_bounded() {
    let dir = Dir::new("rstq");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    for port in 0..(MAX_RSTS as u32 * 4) {
        send_data(&mut m, port, 99, b"x");
    }
    assert_eq!(recv_all(&mut m).len(), MAX_RSTS);
}

#[test]
fn bad_connect_lines_close_the_client() {
    let dir = Dir::new("bad");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let mut bad = UnixStream::connect(dir.uds()).unwrap();
    bad.write_all(b"HELLO 5\n").unwrap();
    let mut huge = UnixStream::connect(dir.uds()).unwrap();
    huge.write_all(&[b'9'; 1000]).unwrap();
    let early = UnixStream::connect(dir.uds()).unwrap();
    drop(early);
    pump(&mut m);
    for mut c in [bad, huge] {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // EOF, or a reset where the muxer left unread bytes behind.
        let mut rest = Vec::new();
        match c.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        }
    }
    assert!(recv_all(&mut m).is_empty());
    assert_eq!(m.connection_count(), 0);
    assert!(m.handshakes.is_empty());
}

#[test]
fn hundreds_of_concurrent_streams_both_ways() {
    const N: u32 = 300;
    let dir = Dir::new("many");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let listener = UnixListener::bind(uds::port_path(&dir.uds(), 80)).unwrap();
    let mut hosts = Vec::new();
    for p in 0..N {
        m.send_pkt::<()>(&guest(Op::Request, 10_000 + p, 80), None);
        hosts.push(listener.accept().unwrap().0);
    }
    let mut clients = Vec::new();
    for p in 0..N {
        let mut c = UnixStream::connect(m.uds_path()).unwrap();
        writeln!(c, "CONNECT {}", 20_000 + p).unwrap();
        clients.push(c);
        // Accept in batches, as the event loop would.
        if p % 32 == 31 {
            pump(&mut m);
        }
    }
    pump(&mut m);
    let pkts = recv_all(&mut m);
    let responses = pkts
        .iter()
        .filter(|(h, _)| h.op() == Some(Op::Response))
        .count();
    let requests: Vec<_> = pkts
        .iter()
        .filter(|(h, _)| h.op() == Some(Op::Request))
        .map(|(h, _)| *h)
        .collect();
    assert_eq!((responses, requests.len()), (N as usize, N as usize));
    for r in &requests {
        m.send_pkt::<()>(&guest(Op::Response, r.dst_port, r.src_port), None);
    }
    assert_eq!(m.connection_count(), 2 * N as usize);
    // Every stream carries its own bytes.
    for (i, h) in hosts.iter_mut().enumerate() {
        h.write_all(format!("h{i};").as_bytes()).unwrap();
    }
    pump(&mut m);
    let mut seen = 0;
    for _ in 0..20 {
        for (h, data) in recv_all(&mut m) {
            assert_eq!(h.op(), Some(Op::Rw));
            let i = h.dst_port - 10_000;
            assert_eq!(data, format!("h{i};").as_bytes());
            seen += 1;
        }
        if seen == N {
            break;
        }
        pump(&mut m);
    }
    assert_eq!(seen, N);
    for r in &requests {
        send_data(&mut m, r.dst_port, r.src_port, b"g");
    }
    for c in clients.iter_mut() {
        let mut line = String::new();
        let mut b = [0u8; 1];
        while !line.ends_with('\n') {
            c.read_exact(&mut b).unwrap();
            line.push(b[0] as char);
        }
        assert!(line.starts_with("OK "));
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"g");
    }
    // A device reset drops them all; the hosts see EOF.
    m.reset();
    assert_eq!(m.connection_count(), 0);
    let mut rest = Vec::new();
    hosts[0].read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn a_host_that_stops_reading_stops_the_guest_not_the_memory() {
    let dir = Dir::new("slow");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let listener = UnixListener::bind(uds::port_path(&dir.uds(), 90)).unwrap();
    m.send_pkt::<()>(&guest(Op::Request, 1, 90), None);
    let _host = listener.accept().unwrap().0;
    let mut granted = CONN_BUF_SIZE;
    let mut fwd = 0u32;
    let mut sent = 0u32;
    // A well-behaved guest sends while it has credit.
    loop {
        for (h, _) in recv_all(&mut m) {
            granted = h.buf_alloc;
            fwd = h.fwd_cnt;
        }
        let credit = granted - (sent - fwd);
        if credit == 0 {
            break;
        }
        let n = credit.min(65536);
        send_data(&mut m, 1, 90, &vec![1u8; n as usize]);
        sent += n;
        assert!(sent < 16 << 20);
        assert!(m.buffered_bytes() <= CONN_BUF_SIZE as usize);
    }
    assert!(m.buffered_bytes() > 0);
    // A greedy one is reset.
    for _ in 0..5 {
        send_data(&mut m, 1, 90, &[1u8; 65536]);
        assert!(m.buffered_bytes() <= CONN_BUF_SIZE as usize);
    }
    assert_eq!(ops(&recv_all(&mut m)), [Some(Op::Rst)]);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn host_close_reaches_the_guest_as_shutdown() {
    let dir = Dir::new("hclose");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let (mut client, req) = host_connect(&mut m, 5000);
    m.send_pkt::<()>(&guest(Op::Response, 5000, req.src_port), None);
    let mut line = [0u8; 14];
    client.read_exact(&mut line).unwrap();
    client.write_all(b"last words").unwrap();
    drop(client);
    pump(&mut m);
    let pkts = recv_all(&mut m);
    assert_eq!(ops(&pkts), [Some(Op::Rw), Some(Op::Shutdown)]);
    assert_eq!(pkts[0].1, b"last words");
    assert_eq!(pkts[1].0.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    assert_eq!(
        m.connection_state((req.src_port, 5000)),
        Some(State::Closing)
    );
    m.send_pkt::<()>(&guest(Op::Rst, 5000, req.src_port), None);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn the_socket_file_goes_with_the_muxer_and_is_never_stolen() {
    let dir = Dir::new("file");
    let m = Muxer::new(CID, &dir.uds()).unwrap();
    let e = Muxer::new(CID, &dir.uds()).unwrap_err();
    assert!(e.to_string().contains("v.sock"), "{e}");
    assert_eq!(
        UnixStream::connect(dir.uds())
            .map(|_| ())
            .map_err(|e| e.kind()),
        Ok(())
    );
    drop(m);
    assert!(!dir.uds().exists());
    assert_eq!(
        UnixStream::connect(dir.uds()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn an_unanswered_request_times_out_with_rst_and_the_client_sees_eof() {
    use crate::devices::virtio::vsock::connection::REQUEST_TIMEOUT;
    let dir = Dir::new("timeout");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let (mut client, req) = host_connect(&mut m, 5000);
    let t0 = std::time::Instant::now();
    // The timer fd wakes the muxer; nothing happens before it.
    let mut rst = Vec::new();
    while rst.is_empty() {
        assert!(t0.elapsed() < REQUEST_TIMEOUT * 3, "no timeout");
        std::thread::sleep(Duration::from_millis(50));
        m.process_host_events().unwrap();
        rst = recv_all(&mut m);
    }
    assert!(t0.elapsed() >= REQUEST_TIMEOUT);
    assert_eq!(ops(&rst), [Some(Op::Rst)]);
    assert_eq!((rst[0].0.src_port, rst[0].0.dst_port), (req.src_port, 5000));
    assert_eq!(m.connection_count(), 0);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// The seed of the packet fuzz.
const FUZZ_SEED: u64 = 0x5eed_1234_abcd_0001;

/// One of `from`, at random.
fn pick<T: Copy>(rng: &mut fastrand::Rng, from: &[T]) -> T {
    from[rng.usize(..from.len())]
}

#[test]
fn seeded_fuzz_of_guest_packets_keeps_every_bound() {
    let dir = Dir::new("fuzz");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    // Two host listeners: one that accepts and reads, one that accepts and never reads.
    let reader = UnixListener::bind(uds::port_path(&dir.uds(), 80)).unwrap();
    let stalled = UnixListener::bind(uds::port_path(&dir.uds(), 81)).unwrap();
    reader.set_nonblocking(true).unwrap();
    stalled.set_nonblocking(true).unwrap();
    let mut hosts = Vec::new();
    let mut parked = Vec::new();
    let mut rng = seeded(FUZZ_SEED);
    let mut replay = Replay::new(FUZZ_SEED);
    let mut payload = vec![0xa5u8; 70_000];
    for round in 0..20_000u32 {
        replay.round = u64::from(round);
        let op = pick(
            &mut rng,
            &[0u16, 1, 1, 2, 3, 4, 5, 5, 5, 5, 6, 7, 8, 0xffff],
        );
        let len = pick(&mut rng, &[0u32, 1, 100, 4096, 65536]);
        let h = Hdr {
            src_cid: pick(&mut rng, &[CID, CID, CID, 2, 0xffff_ffff]),
            dst_cid: pick(&mut rng, &[HOST_CID, HOST_CID, HOST_CID, CID, 1]),
            src_port: pick(&mut rng, &[1, 2, 3, 1 << 31]),
            dst_port: pick(&mut rng, &[80, 81, 82, FIRST_LOCAL_PORT]),
            len,
            type_: pick(&mut rng, &[TYPE_STREAM, TYPE_STREAM, TYPE_STREAM, 2]),
            op,
            flags: pick(&mut rng, &[0, 1, 2, 3, 0xffff_ffff]),
            buf_alloc: pick(&mut rng, &[0, 1, 4096, CONN_BUF_SIZE, u32::MAX]),
            fwd_cnt: rng.u32(..),
        };
        let data = VolatileSlice::from(&mut payload[..len as usize]);
        m.send_pkt(&h, (len > 0).then_some(&data));
        while let Ok((s, _)) = reader.accept() {
            s.set_nonblocking(true).unwrap();
            hosts.push(s);
        }
        while let Ok((s, _)) = stalled.accept() {
            parked.push(s);
        }
        if round % 7 == 0 {
            for s in hosts.iter_mut() {
                let _ = s.write(b"host data");
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
            }
            m.process_host_events().unwrap();
        }
        if round % 3 == 0 {
            let mut buf = vec![0u8; pick(&mut rng, &[1usize, 44, 4096, 65536])];
            for _ in 0..pick(&mut rng, &[1, 10, 1000]) {
                match m.recv_pkt(&VolatileSlice::from(&mut buf[..])) {
                    Some(p) => {
                        assert!(p.len as usize <= buf.len(), "{replay}");
                        assert_eq!((p.src_cid, p.dst_cid), (HOST_CID, CID), "{replay}");
                    }
                    None => break,
                }
            }
        }
        assert!(m.rsts.len() <= MAX_RSTS, "{replay}");
        assert!(m.connection_count() <= MAX_CONNECTIONS, "{replay}");
        assert!(
            m.buffered_bytes() <= m.connection_count() * CONN_BUF_SIZE as usize,
            "{replay}"
        );
        assert!(m.rxq.len() <= m.connection_count(), "{replay}");
    }
    // The fuzz reached both kinds of host listener.
    assert!(
        !hosts.is_empty() && !parked.is_empty(),
        "seed {FUZZ_SEED:#x}: the fuzz reached no host listener of one kind"
    );
}

#[test]
fn churning_connections_without_rx_buffers_leave_nothing_queued() {
    let dir = Dir::new("churn");
    let mut m = Muxer::new(CID, &dir.uds()).unwrap();
    let listener = UnixListener::bind(uds::port_path(&dir.uds(), 80)).unwrap();
    for _ in 0..1000 {
        m.send_pkt::<()>(&guest(Op::Request, 7, 80), None);
        let _ = listener.accept().unwrap();
        m.send_pkt::<()>(&guest(Op::Rst, 7, 80), None);
    }
    assert_eq!(m.connection_count(), 0);
    assert!(m.rxq.is_empty());
    assert!(!m.has_pending_rx());
}
