//! Per-call time limits on blocking sockets.
//!
//! [`SetTimeout`] is implemented for `UnixStream` and `TcpStream`; the guest agent
//! implements it for its vsock stream (the `vsock` crate's stream has the same two
//! methods). [`Deadline`] wraps a borrowed stream and, before every read or write,
//! sets the socket's time limit to what is left until one deadline, so a whole
//! call (several reads and writes) is bounded, not each syscall.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A stream whose blocking reads and writes can be given a time limit.
pub trait SetTimeout {
    /// `None` blocks forever. `Some(Duration::ZERO)` is refused by std sockets;
    /// [`Deadline`] never passes it.
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()>;
}

impl SetTimeout for UnixStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, limit)
    }
    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, limit)
    }
}

impl SetTimeout for TcpStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, limit)
    }
    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, limit)
    }
}

/// A borrowed stream whose reads and writes all end by one deadline. Past it they
/// fail with `io::ErrorKind::TimedOut`. Dropping it clears the stream's limits.
pub struct Deadline<'a, S: SetTimeout> {
    inner: &'a mut S,
    deadline: Instant,
}

impl<'a, S: SetTimeout> Deadline<'a, S> {
    /// Bounds every operation through the wrapper by `now + limit`.
    pub fn new(inner: &'a mut S, limit: Duration) -> Self {
        Deadline {
            inner,
            deadline: Instant::now() + limit,
        }
    }

    /// Time left, or a `TimedOut` error if none is.
    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "deadline passed before the call completed",
            ))
        } else {
            Ok(left)
        }
    }
}

impl<S: SetTimeout> Drop for Deadline<'_, S> {
    fn drop(&mut self) {
        // Best effort: leave the stream blocking without limit, as it was
        // before (a failure here shows up on the next bounded call anyway).
        let _ = self.inner.set_read_timeout(None);
        let _ = self.inner.set_write_timeout(None);
    }
}

impl<S: SetTimeout + Read> Read for Deadline<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.inner.set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

impl<S: SetTimeout + Write> Write for Deadline<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_bounds_a_blocking_read() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut d = Deadline::new(&mut a, Duration::from_millis(50));
        let mut buf = [0u8; 4];
        let err = d.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(d);
        assert_eq!(a.read_timeout().unwrap(), None);
    }

    #[test]
    fn expired_deadline_fails_without_blocking() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let mut d = Deadline::new(&mut a, Duration::ZERO);
        let err = d.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let err = d.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn data_within_deadline_passes() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"ok").unwrap();
        let mut d = Deadline::new(&mut a, Duration::from_secs(5));
        let mut buf = [0u8; 2];
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ok");
    }
}
