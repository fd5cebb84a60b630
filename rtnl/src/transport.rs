//! The transport: requests out as bytes, answers in as raw `(type, payload)` messages.
//!
//! Nothing here knows a message type beyond netlink's own (`NLMSG_ERROR`, `NLMSG_DONE`,
//! ...): a request is its `RTM_*` type and any `Emitable` body, and the answers are
//! handed back undecoded. That is what keeps the guest agent small: it emits the four
//! concrete message types it sends and reads the few answers it needs itself, and
//! never links `RouteNetlinkMessage`'s decoder (the generic layer in `decoded.rs`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    Emitable, ErrorBuffer, NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::Error;

/// How long a request may wait for the kernel's answer, in all.
pub const REPLY_LIMIT: Duration = Duration::from_secs(5);
/// Receive buffer for one read: dumps come in datagrams of up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// The extended ack's text attribute (`NLMSGERR_ATTR_MSG`).
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One answer to a request, undecoded: its message type (`RTM_NEWLINK`, ...) and the
/// bytes after its `nlmsghdr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// An rtnetlink socket of the calling thread's network namespace, one request at a time.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the current thread's network namespace, with a receive
    /// timeout, the kernel's extended ack text on refusals and acks without a copy of
    /// the request (the last two best effort: older kernels lack them).
    pub fn open() -> Result<Self, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        set_recv_timeout(&socket, REPLY_LIMIT).map_err(Error::Socket)?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends a request of type `kind` (`RTM_*`) with `body` and `flags` (plus REQUEST
    /// and ACK) and returns the kernel's answers before its ACK, or before DONE for a
    /// dump (`NLM_F_DUMP` in `flags`). `what` names the request in errors.
    pub fn request_raw<B: Emitable + ?Sized>(
        &mut self,
        what: &str,
        kind: u16,
        body: &B,
        flags: u16,
    ) -> Result<Vec<RawMessage>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = serialize(kind, body, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq);
        let io_err = |source| Error::Io {
            what: what.into(),
            source,
        };
        let sent = self.socket.send(&bytes, 0).map_err(io_err)?;
        if sent != bytes.len() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", bytes.len()),
            )));
        }
        self.receive(what, self.seq, flags & NLM_F_DUMP == NLM_F_DUMP)
    }

    /// Reads the answers of request `seq` until its end, within [`REPLY_LIMIT`] in all:
    /// the receive timeout is what is left of it, so neither a silent kernel nor a
    /// stream of messages for other sequence numbers (answers to a request that timed
    /// out, which are skipped) can hold a caller longer.
    fn receive(&mut self, what: &str, seq: u32, dump: bool) -> Result<Vec<RawMessage>, Error> {
        let deadline = Instant::now() + REPLY_LIMIT;
        let timeout = || Error::Timeout {
            what: what.into(),
            limit: REPLY_LIMIT,
        };
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout());
            }
            // At least 1 ms: a zero timeval would mean no timeout at all.
            set_recv_timeout(&self.socket, left.max(Duration::from_millis(1))).map_err(
                |source| Error::Io {
                    what: what.into(),
                    source,
                },
            )?;
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout())
                }
                Err(source) => {
                    return Err(Error::Io {
                        what: what.into(),
                        source,
                    })
                }
            };
            if take_datagram(&self.buf[..n], seq, dump, what, &mut out)? {
                return Ok(out);
            }
        }
    }
}

/// A request as bytes: a `nlmsghdr` with its length, `kind`, `flags` and `seq`, then
/// `body`.
pub fn serialize<B: Emitable + ?Sized>(kind: u16, body: &B, flags: u16, seq: u32) -> Vec<u8> {
    let len = HEADER_LEN + body.buffer_len();
    let mut bytes = vec![0; len];
    let mut header = NetlinkBuffer::new(&mut bytes[..]);
    header.set_length(len as u32);
    header.set_message_type(kind);
    header.set_flags(flags);
    header.set_sequence_number(seq);
    body.emit(&mut bytes[HEADER_LEN..]);
    bytes
}

/// Adds the messages of one datagram that answer request `seq` to `out`, skipping
/// those of other sequence numbers. True when the answer is complete: the ACK of a
/// request, the DONE of a dump. A refusal (`NLMSG_ERROR` with an error code, or a
/// DONE with a negative one) is an error with its errno and extended ack text.
fn take_datagram(
    data: &[u8],
    seq: u32,
    dump: bool,
    what: &str,
    out: &mut Vec<RawMessage>,
) -> Result<bool, Error> {
    let decode = |reason: String| Error::Decode {
        what: what.into(),
        reason,
    };
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        let b = NetlinkBuffer::new_checked(rest).map_err(|e| decode(e.to_string()))?;
        let len = b.length() as usize;
        // new_checked made sure HEADER_LEN <= len <= rest.len().
        off += align4(len);
        if b.sequence_number() != seq {
            continue;
        }
        let (kind, flags) = (b.message_type(), b.flags());
        let payload = &rest[HEADER_LEN..len];
        match kind {
            NLMSG_ERROR => {
                let e = ErrorBuffer::new_checked(payload).map_err(|e| decode(e.to_string()))?;
                match e.code() {
                    None if dump => {}
                    None => return Ok(true),
                    Some(code) => {
                        // After the code: the request's header (capped) or the whole
                        // request, then the TLVs.
                        let request_len = if flags & NLM_F_CAPPED != 0 {
                            HEADER_LEN
                        } else {
                            e.payload()
                                .get(..4)
                                .map_or(0, |l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]))
                                as usize
                        };
                        let tlvs = e.payload().get(align4(request_len)..).unwrap_or(&[]);
                        return Err(refused(what, code.get(), flags, tlvs));
                    }
                }
            }
            NLMSG_DONE => {
                // A dump that failed half-way says so in DONE: a negative code, then
                // the TLVs.
                let code = payload
                    .get(..4)
                    .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                if code < 0 {
                    return Err(refused(what, code, flags, &payload[4..]));
                }
                return Ok(true);
            }
            NLMSG_OVERRUN => return Err(decode("overrun".into())),
            NLMSG_NOOP => {}
            _ => out.push(RawMessage {
                kind,
                payload: payload.to_vec(),
            }),
        }
    }
    Ok(false)
}

fn refused(what: &str, code: i32, flags: u16, tlvs: &[u8]) -> Error {
    Error::Refused {
        what: what.into(),
        errno: code.saturating_abs(),
        message: if flags & NLM_F_ACK_TLVS != 0 {
            ext_ack_message(tlvs)
        } else {
            None
        },
    }
}

/// The extended ack's text (`NLMSGERR_ATTR_MSG`) among an error's TLVs.
fn ext_ack_message(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = tlvs[4..len].split(|&b| b == 0).next()?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get(align4(len)..).unwrap_or(&[]);
    }
    None
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn set_recv_timeout(socket: &Socket, limit: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: limit.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval that outlives the call; the fd is the socket's.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_MULTIPART;

    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const RTM_NEWROUTE: u16 = 24;

    /// An `NLMSG_ERROR` as the kernel writes it: header, error code, the request's
    /// header (capped), then an extended ack text. `errno` 0 is an ack.
    fn error_datagram(seq: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; HEADER_LEN]); // the capped request header
        let mut flags = NLM_F_CAPPED;
        if let Some(t) = text {
            flags |= NLM_F_ACK_TLVS;
            payload.extend(text_tlv(t));
        }
        message(NLMSG_ERROR, flags, seq, &payload)
    }

    fn text_tlv(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        let mut tlv = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend(v);
        tlv.resize(align4(tlv.len()), 0);
        tlv
    }

    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        serialize(kind, &RawBody(payload), flags, seq)
    }

    struct RawBody<'a>(&'a [u8]);

    impl Emitable for RawBody<'_> {
        fn buffer_len(&self) -> usize {
            align4(self.0.len())
        }
        fn emit(&self, buffer: &mut [u8]) {
            buffer[..self.0.len()].copy_from_slice(self.0);
        }
    }

    fn take(data: &[u8], seq: u32, dump: bool) -> (Result<bool, Error>, Vec<RawMessage>) {
        let mut out = Vec::new();
        let r = take_datagram(data, seq, dump, "test request", &mut out);
        (r, out)
    }

    #[test]
    fn requests_are_a_header_and_the_body() {
        let bytes = message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 7, &[1, 2, 3, 4]);
        let b = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(b.length() as usize, bytes.len());
        assert_eq!(b.message_type(), RTM_GETLINK);
        assert_eq!(b.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(b.sequence_number(), 7);
        assert_eq!(&bytes[HEADER_LEN..], &[1, 2, 3, 4]);
    }

    #[test]
    fn kernel_errors_carry_errno_and_extended_ack_text() {
        let d = error_datagram(5, libc::EINVAL, Some("Nexthop has invalid gateway"));
        let e = take(&d, 5, false).0.unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        let text = e.to_string();
        assert!(text.starts_with("netlink test request: "), "{text}");
        assert!(text.contains("Invalid argument"), "{text}");
        assert!(text.ends_with(": Nexthop has invalid gateway"), "{text}");

        let e = take(&error_datagram(5, libc::EEXIST, None), 5, false)
            .0
            .unwrap_err();
        assert!(e.to_string().ends_with("File exists (os error 17)"), "{e}");
    }

    #[test]
    fn an_uncapped_error_skips_the_whole_request_to_its_text() {
        let request = message(RTM_NEWLINK, NLM_F_REQUEST, 5, &[9; 20]);
        let mut payload = (-libc::ERANGE).to_ne_bytes().to_vec();
        payload.extend(&request);
        payload.extend(text_tlv("too long"));
        let d = message(NLMSG_ERROR, NLM_F_ACK_TLVS, 5, &payload);
        let e = take(&d, 5, false).0.unwrap_err();
        assert_eq!(e.errno(), Some(libc::ERANGE));
        assert!(e.to_string().ends_with(": too long"), "{e}");
    }

    #[test]
    fn acks_end_requests_and_other_sequence_numbers_are_skipped() {
        let mut d = error_datagram(4, libc::ENODEV, None); // a late answer to request 4
        d.extend(message(RTM_NEWLINK, 0, 4, &[0; 16]));
        d.extend(message(RTM_NEWLINK, 0, 5, &[1; 16])); // the answer to request 5
        d.extend(message(NLMSG_NOOP, 0, 5, &[]));
        d.extend(error_datagram(5, 0, None)); // its ack
        let (r, out) = take(&d, 5, false);
        assert!(r.unwrap());
        assert_eq!(
            out,
            vec![RawMessage {
                kind: 16,
                payload: vec![1; 16]
            }]
        );
        // Only part of the answer in this datagram: more to read.
        let (r, out) = take(&message(RTM_NEWLINK, NLM_F_MULTIPART, 5, &[1; 16]), 5, true);
        assert!(!r.unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn dumps_end_at_done_and_report_a_failed_one() {
        let mut d = message(RTM_NEWLINK, NLM_F_MULTIPART, 3, &[1; 16]);
        d.extend(error_datagram(3, 0, None)); // an ack does not end a dump
        d.extend(message(RTM_NEWLINK, NLM_F_MULTIPART, 3, &[2; 16]));
        d.extend(message(NLMSG_DONE, NLM_F_MULTIPART, 3, &0i32.to_ne_bytes()));
        let (r, out) = take(&d, 3, true);
        assert!(r.unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].payload, vec![2; 16]);

        let mut payload = (-libc::EMSGSIZE).to_ne_bytes().to_vec();
        payload.extend(text_tlv("dump too big"));
        let d = message(NLMSG_DONE, NLM_F_MULTIPART | NLM_F_ACK_TLVS, 3, &payload);
        let e = take(&d, 3, true).0.unwrap_err();
        assert_eq!(e.errno(), Some(libc::EMSGSIZE));
        assert!(e.to_string().ends_with(": dump too big"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            take(&[1, 2, 3], 5, false).0,
            Err(Error::Decode { .. })
        ));
        let mut bad = error_datagram(5, 0, None);
        bad[0] = 200; // length past the end
        assert!(matches!(take(&bad, 5, false).0, Err(Error::Decode { .. })));
        let mut short_error = message(NLMSG_ERROR, 0, 5, &[0; 2]);
        short_error[0] = 18; // an error message without the whole code
        assert!(matches!(
            take(&short_error, 5, false).0,
            Err(Error::Decode { .. })
        ));
        let overrun = message(NLMSG_OVERRUN, 0, 5, &[]);
        assert!(matches!(
            take(&overrun, 5, false).0,
            Err(Error::Decode { .. })
        ));
        // A bad text attribute loses the text, not the errno.
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; HEADER_LEN]);
        payload.extend_from_slice(&[200, 0, 1, 0]);
        let d = message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 5, &payload);
        let e = take(&d, 5, false).0.unwrap_err();
        assert!(matches!(
            e,
            Error::Refused {
                errno: libc::EINVAL,
                message: None,
                ..
            }
        ));
    }

    #[test]
    fn a_raw_dump_returns_undecoded_links() {
        use netlink_packet_route::link::LinkMessage;
        let mut rtnl = Rtnl::open().unwrap();
        let got = rtnl
            .request_raw("links", RTM_GETLINK, &LinkMessage::default(), NLM_F_DUMP)
            .unwrap();
        assert!(!got.is_empty());
        assert!(got.iter().all(|m| m.kind == RTM_NEWLINK), "{got:?}");
        // ifinfomsg's index of the first link: lo, 1.
        assert_eq!(got[0].payload[4..8], 1u32.to_ne_bytes());
    }

    #[test]
    #[ignore = "needs root: creates a network namespace"]
    fn root_the_kernels_extended_ack_text_is_kept() {
        use netlink_packet_core::NLM_F_CREATE;
        use netlink_packet_route::route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
        };
        use netlink_packet_route::AddressFamily;
        // `ip route add 10.50.0.0/16 via 10.99.0.1` where no route leads to 10.99.0.1.
        let e = crate::in_new_netns(|| {
            let mut m = RouteMessage::default();
            m.header.address_family = AddressFamily::Inet;
            m.header.destination_prefix_length = 16;
            m.header.table = RouteHeader::RT_TABLE_MAIN;
            m.header.protocol = RouteProtocol::Static;
            m.header.kind = RouteType::Unicast;
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    "10.50.0.0".parse().unwrap(),
                )));
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(
                    "10.99.0.1".parse().unwrap(),
                )));
            Rtnl::open()
                .unwrap()
                .request_raw("new route", RTM_NEWROUTE, &m, NLM_F_CREATE)
                .unwrap_err()
        })
        .unwrap();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
        let Error::Refused {
            message: Some(text),
            ..
        } = &e
        else {
            panic!("no extended ack text: {e}")
        };
        assert!(text.contains("gateway"), "{e}");
        assert!(e.to_string().starts_with("netlink new route: "), "{e}");
    }
}
