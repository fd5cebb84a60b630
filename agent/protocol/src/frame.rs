//! Framing: a 4-byte big-endian body length, then a JSON body of that many bytes.
//!
//! The length is checked against the limit before any buffer for the body is
//! allocated, and the body buffer grows with the bytes that actually arrive, so a
//! peer that announces a large frame and sends nothing costs nothing.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Largest frame body accepted or sent by default: 4 MiB. A `CreateContainer` with
/// a big environment or a large seccomp profile stays far below it.
pub const MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// Initial body buffer; it grows as bytes arrive, up to the announced length.
const INITIAL_BODY_CAPACITY: usize = 64 * 1024;

/// What went wrong while reading, writing, encoding or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly, at a frame boundary.
    #[error("connection closed by the peer")]
    Closed,
    /// The stream ended inside the 4-byte length prefix.
    #[error("frame header truncated: the stream ended after {got} of {HEADER_LEN} length bytes")]
    TruncatedHeader { got: usize },
    /// The announced (or, when sending, the encoded) body length is over the limit.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    /// A frame announced a zero-length body; every frame carries one JSON message.
    #[error("zero-length frame: every frame must carry a JSON message")]
    Empty,
    /// The stream ended inside a frame body.
    #[error(
        "frame truncated: the header announced {expected} bytes, the stream ended after {got}"
    )]
    Truncated { expected: u32, got: usize },
    /// A read or write hit the socket's time limit; the stream may be mid-frame.
    #[error("timed out while {op} a frame")]
    TimedOut { op: &'static str },
    /// Any other I/O failure.
    #[error("I/O error while {op} a frame: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The body is not valid JSON, or not the JSON of the expected message.
    #[error("malformed {what} at line {line} column {column}: {source}")]
    Json {
        what: &'static str,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A message could not be encoded (cannot happen for this crate's types, kept
    /// typed rather than panicking).
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl FrameError {
    /// Maps an I/O error, turning socket time limits into [`FrameError::TimedOut`].
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut { op },
            _ => FrameError::Io { op, source },
        }
    }

    /// Wraps a JSON decoding error, keeping its position.
    pub(crate) fn json(what: &'static str, source: serde_json::Error) -> Self {
        FrameError::Json {
            what,
            line: source.line(),
            column: source.column(),
            source,
        }
    }

    /// True when the byte stream is still at a frame boundary after this error, so
    /// the connection can carry on (only JSON content errors qualify).
    pub fn stream_in_sync(&self) -> bool {
        matches!(self, FrameError::Json { .. } | FrameError::Encode { .. })
    }
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame and returns its body. `max` is the largest body accepted.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header).map_err(|e| FrameError::io("reading", e))?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < HEADER_LEN {
        return Err(FrameError::TruncatedHeader { got });
    }
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    // `len` fits in memory: it is at most `max`, a u32.
    let expected = len as usize;
    let mut body = Vec::with_capacity(expected.min(INITIAL_BODY_CAPACITY));
    let mut limited = r.take(u64::from(len));
    loop {
        match limited.read_to_end(&mut body) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::io("reading", e)),
        }
    }
    if body.len() < expected {
        return Err(FrameError::Truncated {
            expected: len,
            got: body.len(),
        });
    }
    Ok(body)
}

/// Encodes `msg` as one frame (header and body), refusing bodies over `max`.
pub fn encode_frame<T: Serialize + ?Sized>(
    msg: &T,
    what: &'static str,
    max: u32,
) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut buf, msg).map_err(|source| FrameError::Encode { what, source })?;
    let body_len = buf.len() - HEADER_LEN;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|len| *len <= max)
        .ok_or(FrameError::TooLarge {
            len: body_len as u64,
            max,
        })?;
    buf[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Writes an already encoded frame and flushes.
pub fn write_encoded<W: Write + ?Sized>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame)
        .and_then(|()| w.flush())
        .map_err(|e| FrameError::io("writing", e))
}

/// Encodes and writes one message.
pub fn write_message<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
    what: &'static str,
    max: u32,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg, what, max)?;
    write_encoded(w, &frame)
}

/// Decodes a frame body as `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], what: &'static str) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::json(what, e))
}

/// Reads one frame and decodes it as `T`.
pub fn read_message<R: Read + ?Sized, T: DeserializeOwned>(
    r: &mut R,
    what: &'static str,
    max: u32,
) -> Result<T, FrameError> {
    let body = read_frame(r, max)?;
    decode_body(&body, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A reader that serves `data`, then fails the test if read again: proves
    /// that nothing past the header is read (or allocated for).
    struct HeaderOnly {
        data: Cursor<Vec<u8>>,
        reads_past_end: usize,
    }

    impl Read for HeaderOnly {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            if n == 0 {
                self.reads_past_end += 1;
            }
            Ok(n)
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip_body() {
        let mut c = Cursor::new(frame(b"{\"a\":1}"));
        assert_eq!(read_frame(&mut c, MAX_FRAME_LEN).unwrap(), b"{\"a\":1}");
        assert!(matches!(
            read_frame(&mut c, MAX_FRAME_LEN),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_length_rejected_before_reading_body() {
        for len in [MAX_FRAME_LEN + 1, u32::MAX] {
            let mut r = HeaderOnly {
                data: Cursor::new(len.to_be_bytes().to_vec()),
                reads_past_end: 0,
            };
            match read_frame(&mut r, MAX_FRAME_LEN) {
                Err(FrameError::TooLarge { len: got, max }) => {
                    assert_eq!(got, u64::from(len));
                    assert_eq!(max, MAX_FRAME_LEN);
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
            assert_eq!(r.reads_past_end, 0, "body must not be read");
        }
    }

    #[test]
    fn exactly_max_is_accepted() {
        let body = vec![b' '; 16];
        let mut c = Cursor::new(frame(&body));
        assert_eq!(read_frame(&mut c, 16).unwrap().len(), 16);
        let mut c = Cursor::new(frame(&body));
        assert!(matches!(
            read_frame(&mut c, 15),
            Err(FrameError::TooLarge { len: 16, max: 15 })
        ));
    }

    #[test]
    fn zero_length_frame_is_an_error() {
        let mut c = Cursor::new(vec![0, 0, 0, 0]);
        assert!(matches!(
            read_frame(&mut c, MAX_FRAME_LEN),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn truncated_header_and_body() {
        let mut c = Cursor::new(vec![0, 0]);
        assert!(matches!(
            read_frame(&mut c, MAX_FRAME_LEN),
            Err(FrameError::TruncatedHeader { got: 2 })
        ));
        let mut bytes = frame(b"{\"abc\":true}");
        bytes.truncate(bytes.len() - 3);
        let mut c = Cursor::new(bytes);
        match read_frame(&mut c, MAX_FRAME_LEN) {
            Err(
                e @ FrameError::Truncated {
                    expected: 12,
                    got: 9,
                },
            ) => assert!(e.to_string().contains("announced 12 bytes")),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn garbage_json_names_position() {
        let err = decode_body::<serde_json::Value>(b"{\n  \"a\": tru", "request").unwrap_err();
        match &err {
            FrameError::Json { line, column, .. } => {
                assert_eq!(*line, 2);
                assert!(*column > 0);
            }
            other => panic!("expected Json, got {other:?}"),
        }
        assert!(err.to_string().starts_with("malformed request at line 2"));
    }

    #[test]
    fn encode_refuses_oversized_message() {
        let big = "x".repeat(100);
        assert!(matches!(
            encode_frame(&big, "test", 50),
            Err(FrameError::TooLarge { len: 102, max: 50 })
        ));
        let ok = encode_frame(&big, "test", 102).unwrap();
        assert_eq!(&ok[..4], &102u32.to_be_bytes());
    }

    #[test]
    fn timeouts_are_typed() {
        let e = FrameError::io("reading", io::Error::from(io::ErrorKind::WouldBlock));
        assert!(matches!(e, FrameError::TimedOut { op: "reading" }));
    }
}
