//! The host side's first line on the hybrid-vsock socket: `CONNECT <guest port>\n`.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Longest accepted line, newline included (`CONNECT 4294967295\n` is 19 bytes).
pub const MAX_LINE: usize = 32;
/// How long a host client may take to send its line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a host client's CONNECT line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
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
pub fn parse_connect_line(line: &[u8]) -> Result<u32, Error> {
    let bad = || Error::BadLine(String::from_utf8_lossy(line).into_owned());
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

/// A host client that has not sent its CONNECT line yet.
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
    pub fn on_readable(&mut self) -> Result<Progress, Error> {
        let lossy = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
        loop {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte) {
                Ok(0) => return Err(Error::Eof(lossy(&self.line))),
                Ok(_) if byte[0] == b'\n' => {
                    return parse_connect_line(&self.line).map(Progress::Connect)
                }
                Ok(_) => {
                    self.line.push(byte[0]);
                    if self.line.len() >= MAX_LINE {
                        return Err(Error::TooLong(lossy(&self.line)));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Pending),
                Err(e) => return Err(Error::Io(e.kind())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn good_lines_parse() {
        assert_eq!(parse_connect_line(b"CONNECT 1024"), Ok(1024));
        assert_eq!(parse_connect_line(b"CONNECT 0"), Ok(0));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\r"), Ok(u32::MAX));
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
            assert!(matches!(e, Error::BadLine(_)), "{line:?}: {e:?}");
        }
        assert!(parse_connect_line(b"PUT 1")
            .unwrap_err()
            .to_string()
            .contains("\"PUT 1\""));
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
        assert!(matches!(h.on_readable(), Err(Error::TooLong(_))));

        let (mut h, peer) = pair();
        (&peer).write_all(b"CONNECT 5").unwrap();
        drop(peer);
        assert_eq!(h.on_readable(), Err(Error::Eof("CONNECT 5".into())));
    }
}
