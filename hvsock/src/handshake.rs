//! The hybrid-vsock exchange: a host client writes `CONNECT <guest port>\n`; the VMM
//! answers `OK <host port>\n` once the guest accepted, or closes the socket.
//!
//! [`connect`] is the client (runv, runv-shim, the agent suites); [`Handshake`] reads
//! the line on the VMM's side and [`ok_line`] is its answer.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest accepted `CONNECT` line, newline included (`CONNECT 4294967295\n` is 19
/// bytes).
pub const MAX_LINE: usize = 32;
/// Longest `OK` answer a client reads (`OK 4294967295\n` is 14 bytes).
const MAX_ANSWER: usize = 32;
/// How long a host client may take to send its line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's first line.
pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The VMM's answer once the guest accepted the connection.
pub fn ok_line(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

/// Why a client's connect failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("hybrid vsock {}: {source}", uds.display())]
    Io {
        uds: PathBuf,
        source: std::io::Error,
    },
    #[error("hybrid vsock {} answered {answer:?} to CONNECT {port}", uds.display())]
    Refused {
        uds: PathBuf,
        port: u32,
        answer: String,
    },
}

/// A stream to guest vsock `port` through the VMM's socket `uds` (any path length).
/// Connecting, sending the line and reading the answer are each bounded by `limit`;
/// the stream is returned blocking and without time limits.
pub fn connect(uds: &Path, port: u32, limit: Duration) -> Result<UnixStream, ConnectError> {
    let io = |source| ConnectError::Io {
        uds: uds.into(),
        source,
    };
    let mut s = crate::uds::connect(uds).map_err(io)?;
    s.set_read_timeout(Some(limit)).map_err(io)?;
    s.set_write_timeout(Some(limit)).map_err(io)?;
    s.write_all(connect_line(port).as_bytes()).map_err(io)?;
    // Byte by byte up to the newline: what follows belongs to the guest's stream.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < MAX_ANSWER {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    if parse_ok_line(&line).is_none() {
        return Err(ConnectError::Refused {
            uds: uds.into(),
            port,
            answer: String::from_utf8_lossy(&line).into_owned(),
        });
    }
    s.set_read_timeout(None).map_err(io)?;
    s.set_write_timeout(None).map_err(io)?;
    Ok(s)
}

/// The host port of an `OK <port>\n` answer.
fn parse_ok_line(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let port = text.strip_prefix("OK ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Why a host client's CONNECT line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    /// Not `CONNECT <port>`.
    #[error("bad hybrid-vsock line {0:?}: expected \"CONNECT <port>\"")]
    BadLine(String),
    /// No newline within [`MAX_LINE`] bytes.
    #[error("hybrid-vsock line longer than {MAX_LINE} bytes: {0:?}...")]
    TooLong(String),
    /// The client closed before its line was complete.
    #[error("host client closed the socket after {0:?}, before a complete CONNECT line")]
    Eof(String),
    /// Reading the socket failed.
    #[error("reading the CONNECT line: {0}")]
    Io(ErrorKind),
}

/// Parses one line (without its newline; a trailing `\r` is allowed).
pub fn parse_connect_line(line: &[u8]) -> Result<u32, LineError> {
    let bad = || LineError::BadLine(String::from_utf8_lossy(line).into_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let port = text.strip_prefix("CONNECT ").ok_or_else(bad)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    port.parse().map_err(|_| bad())
}

/// What a read on a pending client gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// No complete line yet.
    Pending,
    /// The client asked for this guest port.
    Connect(u32),
}

/// The VMM's side: a host client that has not sent its CONNECT line yet.
#[derive(Debug)]
pub struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

impl Handshake {
    /// A freshly accepted (non-blocking) client.
    pub fn new(stream: UnixStream, now: Instant) -> Self {
        Handshake {
            stream,
            line: Vec::with_capacity(MAX_LINE),
            deadline: now + HANDSHAKE_TIMEOUT,
        }
    }

    /// When the client's time runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The client's socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Gives up the socket once the line is read.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Reads what the client sent so far. One byte at a time: whatever follows the newline
    /// is stream data for the guest and must stay in the socket.
    pub fn on_readable(&mut self) -> Result<Progress, LineError> {
        let lossy = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
        loop {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(LineError::Eof(lossy(&self.line))),
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect_line(&self.line).map(Progress::Connect)
                }
                Ok(_) => {
                    self.line.push(byte[0]);
                    if self.line.len() >= MAX_LINE {
                        return Err(LineError::TooLong(lossy(&self.line)));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Pending),
                Err(e) => return Err(LineError::Io(e.kind())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn good_lines_parse() {
        assert_eq!(parse_connect_line(b"CONNECT 1024"), Ok(1024));
        assert_eq!(parse_connect_line(b"CONNECT 0"), Ok(0));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\r"), Ok(u32::MAX));
        let line = connect_line(77);
        assert_eq!(
            parse_connect_line(line.strip_suffix('\n').unwrap().as_bytes()),
            Ok(77)
        );
        assert_eq!(parse_ok_line(ok_line(1 << 30).as_bytes()), Some(1 << 30));
    }

    #[test]
    fn bad_lines_are_refused_and_named() {
        for line in [
            &b"CONNECT"[..],
            b"CONNECT ",
            b"connect 5",
            b"CONNECT  5",
            b"CONNECT -5",
            b"CONNECT +5",
            b"CONNECT 5 6",
            b"CONNECT 4294967296",
            b"CONNECT 0x10",
            b"LISTEN 5",
            b"",
            b"CONNECT \xff",
        ] {
            let e = parse_connect_line(line).unwrap_err();
            assert!(matches!(e, LineError::BadLine(_)), "{line:?}: {e:?}");
        }
        assert!(parse_connect_line(b"PUT 1")
            .unwrap_err()
            .to_string()
            .contains("\"PUT 1\""));
        for answer in [&b"OK 5"[..], b"OK \n", b"OK x\n", b"NO 5\n", b""] {
            assert_eq!(parse_ok_line(answer), None, "{answer:?}");
        }
    }

    fn pair() -> (Handshake, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Handshake::new(a, Instant::now()), b)
    }

    #[test]
    fn a_line_may_arrive_in_pieces_and_leaves_the_data_after_it() {
        let (mut h, mut peer) = pair();
        assert_eq!(h.on_readable(), Ok(Progress::Pending));
        peer.write_all(b"CONN").unwrap();
        assert_eq!(h.on_readable(), Ok(Progress::Pending));
        peer.write_all(b"ECT 52\nhello").unwrap();
        assert_eq!(h.on_readable(), Ok(Progress::Connect(52)));
        let mut rest = [0u8; 5];
        h.into_stream().read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"hello");
    }

    #[test]
    fn huge_lines_and_early_eof_fail() {
        let (mut h, mut peer) = pair();
        peer.write_all(&[b'A'; 4096]).unwrap();
        assert!(matches!(h.on_readable(), Err(LineError::TooLong(_))));

        let (mut h, peer) = pair();
        (&peer).write_all(b"CONNECT 5").unwrap();
        drop(peer);
        assert_eq!(h.on_readable(), Err(LineError::Eof("CONNECT 5".into())));
    }

    /// The client against this module's own server side: the line it sends is the one
    /// the VMM parses, the answer it accepts is the one the VMM writes, and the bytes
    /// after the answer stay in the stream.
    #[test]
    fn client_and_server_agree() {
        let t = tempfile::tempdir().unwrap();
        let uds = t.path().join("v.sock");
        let l = UnixListener::bind(&uds).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_nonblocking(true).unwrap();
            let mut h = Handshake::new(s, Instant::now());
            let port = loop {
                match h.on_readable().unwrap() {
                    Progress::Connect(p) => break p,
                    Progress::Pending => std::thread::sleep(Duration::from_millis(1)),
                }
            };
            let mut s = h.into_stream();
            s.set_nonblocking(false).unwrap();
            s.write_all(format!("{}after", ok_line(1 << 30)).as_bytes())
                .unwrap();
            port
        });
        let mut s = connect(&uds, 1024, Duration::from_secs(5)).unwrap();
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"after");
        assert_eq!(server.join().unwrap(), 1024);
    }

    #[test]
    fn a_closed_or_silent_vmm_is_an_error_naming_the_socket() {
        let t = tempfile::tempdir().unwrap();
        let uds = t.path().join("v.sock");
        let e = connect(&uds, 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, ConnectError::Io { .. }), "{e}");
        assert!(e.to_string().contains("v.sock"), "{e}");
        let l = UnixListener::bind(&uds).unwrap();
        // A VMM that reads the line and closes (the guest refused the port).
        let closer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut line = [0u8; 10];
            s.read_exact(&mut line).unwrap();
        });
        let e = connect(&uds, 9, Duration::from_secs(5)).unwrap_err();
        closer.join().unwrap();
        assert!(e.to_string().contains("CONNECT 9"), "{e}");
        let l = UnixListener::bind(t.path().join("w.sock")).unwrap();
        let e = connect(&t.path().join("w.sock"), 9, Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(e, ConnectError::Io { .. }),
            "a silent VMM times out: {e}"
        );
        drop(l);
    }
}
