use super::*;
use std::io::Read;

use crate::devices::virtio::test_utils::{self, vsock::GUEST_CID};
const GUEST_PORT: u32 = 1000;
const HOST_PORT: u32 = 52;

/// A header from the guest end of the test connection.
fn guest_hdr(op: Op, len: u32) -> Hdr {
    test_utils::vsock::guest_hdr(op, GUEST_PORT, HOST_PORT, len)
}

/// What the guest side of a test remembers: the credit the device granted.
#[derive(Default)]
struct Guest {
    sent: Wrapping<u32>,
    dev_buf_alloc: u32,
    dev_fwd_cnt: Wrapping<u32>,
    received: Wrapping<u32>,
}

impl Guest {
    fn credit(&self) -> u32 {
        self.dev_buf_alloc
            .saturating_sub((self.sent - self.dev_fwd_cnt).0)
    }
    fn hdr(&self, op: Op, len: u32) -> Hdr {
        Hdr {
            fwd_cnt: self.received.0,
            ..guest_hdr(op, len)
        }
    }
}

fn recv(c: &mut Connection, g: &mut Guest, now: Instant) -> Option<(Hdr, Vec<u8>)> {
    let mut buf = vec![0u8; MAX_PKT_DATA as usize];
    let h = c.recv_pkt(&VolatileSlice::from(&mut buf[..]), now)?;
    assert_eq!(
        (h.src_cid, h.dst_cid, h.type_),
        (HOST_CID, GUEST_CID, TYPE_STREAM)
    );
    assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
    g.dev_buf_alloc = h.buf_alloc;
    g.dev_fwd_cnt = Wrapping(h.fwd_cnt);
    g.received += Wrapping(h.len);
    buf.truncate(h.len as usize);
    Some((h, buf))
}

fn send(c: &mut Connection, g: &mut Guest, op: Op, data: &[u8], now: Instant) {
    let mut d = data.to_vec();
    let hdr = g.hdr(op, d.len() as u32);
    if op == Op::Rw {
        g.sent += Wrapping(d.len() as u32);
    }
    c.send_pkt(&hdr, Some(&VolatileSlice::from(&mut d[..])), now);
}

fn op_of(p: Option<(Hdr, Vec<u8>)>) -> Option<Op> {
    p.and_then(|(h, _)| h.op())
}

/// A guest-initiated connection after its RESPONSE, and the host's end of the stream.
fn established() -> (Connection, UnixStream, Guest) {
    let (ours, host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut c = Connection::new_peer(ours, GUEST_CID, &guest_hdr(Op::Request, 0));
    let mut g = Guest::default();
    let now = Instant::now();
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!(h.op(), Some(Op::Response));
    assert_eq!((h.src_port, h.dst_port), (HOST_PORT, GUEST_PORT));
    assert_eq!(c.state(), State::Established);
    assert!(recv(&mut c, &mut g, now).is_none());
    (c, host, g)
}

fn read_available(host: &mut UnixStream) -> Vec<u8> {
    host.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match host.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn guest_initiated_data_flows_both_ways() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    send(&mut c, &mut g, Op::Rw, b"hello", now);
    let mut b = [0u8; 5];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");

    assert_eq!(c.interest(), Some(EventSet::IN));
    host.write_all(b"world").unwrap();
    c.notify(EventSet::IN, now);
    assert_eq!(c.interest(), Some(EventSet::empty()));
    let (h, data) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!((h.op(), data.as_slice()), (Some(Op::Rw), &b"world"[..]));
    // Nothing more in the socket: no packet, and the stream is polled again.
    assert!(recv(&mut c, &mut g, now).is_none());
    assert_eq!(c.interest(), Some(EventSet::IN));
}

#[test]
fn host_initiated_request_response_then_ok_line() {
    let (ours, mut host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut c = Connection::new_local(ours, GUEST_CID, 1 << 30, 5000);
    let mut g = Guest::default();
    let now = Instant::now();
    assert_eq!(c.interest(), Some(EventSet::empty()));
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!(h.op(), Some(Op::Request));
    assert_eq!((h.src_port, h.dst_port), (1 << 30, 5000));
    assert_eq!(c.deadline(), Some(now + REQUEST_TIMEOUT));
    let resp = Hdr {
        src_port: 5000,
        dst_port: 1 << 30,
        ..g.hdr(Op::Response, 0)
    };
    c.send_pkt::<()>(&resp, None, now);
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.deadline(), None);
    let mut line = [0u8; 14];
    host.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"OK 1073741824\n");
}

#[test]
fn a_refused_or_unanswered_request_closes_the_host_stream() {
    let now = Instant::now();
    // The guest answers RST: nothing listens on that port.
    let (ours, mut host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut c = Connection::new_local(ours, GUEST_CID, 1 << 30, 5000);
    let mut g = Guest::default();
    recv(&mut c, &mut g, now).unwrap();
    c.send_pkt::<()>(&g.hdr(Op::Rst, 0), None, now);
    assert!(c.is_done());
    drop(c);
    assert_eq!(read_available(&mut host), b"");

    // The guest never answers.
    let (ours, _host) = UnixStream::pair().unwrap();
    let mut c = Connection::new_local(ours, GUEST_CID, 1 << 30, 5000);
    recv(&mut c, &mut g, now).unwrap();
    c.on_timeout(now + REQUEST_TIMEOUT / 2);
    assert_eq!(c.state(), State::LocalInit);
    c.on_timeout(now + REQUEST_TIMEOUT);
    assert_eq!(c.take_reset_cause(), Some(ResetCause::Timeout));
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
    assert!(c.is_done());

    // The host gives up before the REQUEST went out: the guest is never told.
    let (ours, host) = UnixStream::pair().unwrap();
    let mut c = Connection::new_local(ours, GUEST_CID, 1 << 30, 5000);
    drop(host);
    c.notify(EventSet::HANG_UP, now);
    assert!(c.is_done());
}

#[test]
fn host_data_never_exceeds_the_guest_credit() {
    let (ours, mut host) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let req = Hdr {
        buf_alloc: 10,
        ..guest_hdr(Op::Request, 0)
    };
    let mut c = Connection::new_peer(ours, GUEST_CID, &req);
    let mut g = Guest::default();
    let now = Instant::now();
    recv(&mut c, &mut g, now).unwrap();
    host.write_all(&[7u8; 100]).unwrap();
    c.notify(EventSet::IN, now);
    let (h, data) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!((h.op(), data.len()), (Some(Op::Rw), 10));
    assert_eq!(c.peer_credit(), 0);
    // Out of credit: ask for more once, and stop polling the stream.
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::CreditRequest));
    assert!(recv(&mut c, &mut g, now).is_none());
    assert_eq!(c.interest(), Some(EventSet::empty()));
    // The guest read the 10 bytes and says so.
    let upd = Hdr {
        buf_alloc: 10,
        fwd_cnt: 10,
        ..guest_hdr(Op::CreditUpdate, 0)
    };
    c.send_pkt::<()>(&upd, None, now);
    assert_eq!(c.peer_credit(), 10);
    assert_eq!(c.interest(), Some(EventSet::IN));
    // A bogus fwd_cnt ahead of what was sent grants nothing.
    let bogus = Hdr {
        buf_alloc: 10,
        fwd_cnt: 1000,
        ..guest_hdr(Op::CreditUpdate, 0)
    };
    c.send_pkt::<()>(&bogus, None, now);
    assert_eq!(c.peer_credit(), 0);
}

#[test]
fn a_credit_update_follows_what_the_host_consumed() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    send(&mut c, &mut g, Op::Rw, &[1u8; 1000], now);
    assert!(recv(&mut c, &mut g, now).is_none(), "below the threshold");
    send(
        &mut c,
        &mut g,
        Op::Rw,
        &vec![1u8; CREDIT_UPDATE_THRESHOLD as usize],
        now,
    );
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!(h.op(), Some(Op::CreditUpdate));
    assert_eq!(h.fwd_cnt, 1000 + CREDIT_UPDATE_THRESHOLD);
    assert_eq!(
        read_available(&mut host).len(),
        1000 + CREDIT_UPDATE_THRESHOLD as usize
    );
    // A credit request is answered at once.
    c.send_pkt::<()>(&g.hdr(Op::CreditRequest, 0), None, now);
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::CreditUpdate));
}

/// Fills the connection as a well-behaved guest would: as much as its credit allows.
fn fill(c: &mut Connection, g: &mut Guest, now: Instant) -> usize {
    let mut total = 0;
    loop {
        while recv(c, g, now).is_some() {}
        let n = g.credit().min(MAX_PKT_DATA);
        if n == 0 {
            return total;
        }
        send(c, g, Op::Rw, &vec![0x5a; n as usize], now);
        total += n as usize;
        assert!(c.buffered() <= CONN_BUF_SIZE as usize);
        assert!(total < 64 << 20, "the guest was never stopped");
    }
}

#[test]
fn a_host_that_does_not_read_stalls_the_guest_within_the_buffer_limit() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    let sent = fill(&mut c, &mut g, now);
    assert!(c.buffered() > 0 && c.buffered() <= CONN_BUF_SIZE as usize);
    assert_eq!(c.interest(), Some(EventSet::IN | EventSet::OUT));
    // A guest that ignores its credit is reset before the buffer passes its limit.
    let mut cause = None;
    for _ in 0..5 {
        send(&mut c, &mut g, Op::Rw, &[0x5a; MAX_PKT_DATA as usize], now);
        assert!(c.buffered() <= CONN_BUF_SIZE as usize);
        cause = c.take_reset_cause();
        if cause.is_some() {
            break;
        }
    }
    assert_eq!(cause, Some(ResetCause::CreditExceeded));
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
    drop(c);
    // The host gets a prefix of what was sent; the rest went with the reset.
    host.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert!(got.len() <= sent + 5 * MAX_PKT_DATA as usize);
    assert!(got.iter().all(|&b| b == 0x5a));
}

#[test]
fn the_guest_resumes_when_the_host_reads() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    let mut sent = fill(&mut c, &mut g, now);
    let mut got = 0;
    for _ in 0..100 {
        got += read_available(&mut host).len();
        c.notify(EventSet::OUT, now);
        sent += fill(&mut c, &mut g, now);
        if sent > 4 * CONN_BUF_SIZE as usize {
            break;
        }
    }
    assert!(
        sent > 4 * CONN_BUF_SIZE as usize,
        "credit updates kept it going"
    );
    while c.buffered() > 0 {
        got += read_available(&mut host).len();
        c.notify(EventSet::OUT, now);
    }
    got += read_available(&mut host).len();
    assert_eq!(got, sent);
    assert_eq!(c.buffered(), 0);
}

#[test]
fn guest_half_close_then_host_close_ends_with_shutdown_and_rst() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    send(&mut c, &mut g, Op::Rw, b"req", now);
    let shut = Hdr {
        flags: SHUTDOWN_SEND,
        ..g.hdr(Op::Shutdown, 0)
    };
    c.send_pkt::<()>(&shut, None, now);
    // The host sees the data and then EOF, and can still answer.
    host.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"req");
    host.write_all(b"resp").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    c.notify(EventSet::IN, now);
    let (h, data) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!((h.op(), data.as_slice()), (Some(Op::Rw), &b"resp"[..]));
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!(
        (h.op(), h.flags),
        (Some(Op::Shutdown), SHUTDOWN_RCV | SHUTDOWN_SEND)
    );
    assert_eq!(c.state(), State::Closing);
    c.send_pkt::<()>(&g.hdr(Op::Rst, 0), None, now);
    assert!(c.is_done());
}

#[test]
fn host_half_close_lets_the_guest_keep_sending() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    host.shutdown(Shutdown::Write).unwrap();
    c.notify(EventSet::IN, now);
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!((h.op(), h.flags), (Some(Op::Shutdown), SHUTDOWN_SEND));
    assert_eq!(c.state(), State::Established);
    assert_eq!(c.interest(), Some(EventSet::empty()));
    send(&mut c, &mut g, Op::Rw, b"late", now);
    assert_eq!(read_available(&mut host), b"late");
    // The guest closes: both directions are done; RST confirms.
    let shut = Hdr {
        flags: SHUTDOWN_SEND | SHUTDOWN_RCV,
        ..g.hdr(Op::Shutdown, 0)
    };
    c.send_pkt::<()>(&shut, None, now);
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
    assert!(c.is_done());
}

#[test]
fn a_host_that_closes_gets_its_last_bytes_delivered_then_shutdown() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    host.write_all(b"bye").unwrap();
    drop(host);
    c.notify(EventSet::IN | EventSet::HANG_UP, now);
    assert_eq!(c.interest(), None, "a hung-up stream is not polled");
    let (h, data) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!((h.op(), data.as_slice()), (Some(Op::Rw), &b"bye"[..]));
    let (h, _) = recv(&mut c, &mut g, now).unwrap();
    assert_eq!(
        (h.op(), h.flags),
        (Some(Op::Shutdown), SHUTDOWN_RCV | SHUTDOWN_SEND)
    );
    // The guest never answers: the connection goes after CLOSE_TIMEOUT.
    c.on_timeout(now + CLOSE_TIMEOUT);
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
    assert!(c.is_done());
}

#[test]
fn guest_close_flushes_to_the_host_first_with_a_timeout() {
    let (mut c, mut host, mut g) = established();
    let now = Instant::now();
    fill(&mut c, &mut g, now);
    let shut = Hdr {
        flags: SHUTDOWN_SEND | SHUTDOWN_RCV,
        ..g.hdr(Op::Shutdown, 0)
    };
    c.send_pkt::<()>(&shut, None, now);
    assert!(
        recv(&mut c, &mut g, now).is_none(),
        "no RST while data waits"
    );
    assert_eq!(c.deadline(), Some(now + FLUSH_TIMEOUT));
    // Progress pushes the deadline; draining everything ends with RST and EOF.
    read_available(&mut host);
    let later = now + Duration::from_secs(1);
    c.notify(EventSet::OUT, later);
    while c.buffered() > 0 {
        read_available(&mut host);
        c.notify(EventSet::OUT, later);
    }
    assert_eq!(op_of(recv(&mut c, &mut g, later)), Some(Op::Rst));
    assert!(c.is_done());

    // A host that never reads: dropped after FLUSH_TIMEOUT.
    let (mut c, _host, mut g) = established();
    fill(&mut c, &mut g, now);
    c.send_pkt::<()>(&shut, None, now);
    c.on_timeout(now + FLUSH_TIMEOUT);
    assert_eq!(c.take_reset_cause(), Some(ResetCause::Timeout));
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
}

#[test]
fn protocol_violations_reset_the_connection() {
    let now = Instant::now();
    for (op, flags_before) in [
        (99u16, 0),
        (Op::Request as u16, 0),
        (Op::Response as u16, 0),
        (Op::Rw as u16, SHUTDOWN_SEND),
    ] {
        let (mut c, _host, mut g) = established();
        if flags_before != 0 {
            let shut = Hdr {
                flags: flags_before,
                ..g.hdr(Op::Shutdown, 0)
            };
            c.send_pkt::<()>(&shut, None, now);
        }
        let mut d = [1u8; 4];
        let hdr = Hdr {
            op,
            len: 4,
            ..g.hdr(Op::Rw, 4)
        };
        c.send_pkt(&hdr, Some(&VolatileSlice::from(&mut d[..])), now);
        assert!(
            matches!(c.take_reset_cause(), Some(ResetCause::Protocol(_))),
            "op {op}"
        );
        assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst), "op {op}");
        assert!(c.is_done());
    }
    // Data before the guest accepted a host-initiated connection.
    let (ours, _host) = UnixStream::pair().unwrap();
    let mut c = Connection::new_local(ours, GUEST_CID, 1 << 30, 5000);
    let mut g = Guest::default();
    recv(&mut c, &mut g, now).unwrap();
    let mut d = [1u8; 4];
    c.send_pkt(
        &g.hdr(Op::Rw, 4),
        Some(&VolatileSlice::from(&mut d[..])),
        now,
    );
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
}

#[test]
fn a_broken_host_stream_resets() {
    let (mut c, host, mut g) = established();
    let now = Instant::now();
    drop(host);
    send(&mut c, &mut g, Op::Rw, b"x", now);
    assert_eq!(c.take_reset_cause(), Some(ResetCause::HostIo));
    assert_eq!(op_of(recv(&mut c, &mut g, now)), Some(Op::Rst));
    // Anything after that is ignored.
    send(&mut c, &mut g, Op::Rw, b"x", now);
    assert!(recv(&mut c, &mut g, now).is_none());
    assert!(c.is_done());
}
