//! Which connection on a stdio socket is the agent's: the first whose first
//! [`TOKEN_LEN`] bytes are the process's token (runv_agent_protocol::stdio_token).
//!
//! Any process in the guest with an `AF_VSOCK` socket can connect to the stdio ports,
//! so connections are checked side by side on one thread with `poll`: one that sends
//! nothing cannot hold up the agent's, a wrong preamble is dropped and counted, and when
//! more than [`MAX_PENDING`] connections wait, the oldest is dropped (the agent sends its
//! preamble as soon as it connects, so a flood would have to arrive in the moment between
//! its connect and its write to push it out).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use runv_agent_protocol::stdio_token::TOKEN_LEN;
use runv_agent_protocol::StdioToken;

/// How long a connection may take to send its preamble.
pub const PREAMBLE_LIMIT: Duration = Duration::from_secs(5);
/// Connections checked at once.
pub const MAX_PENDING: usize = 64;

struct Pending {
    stream: UnixStream,
    since: Instant,
    got: Vec<u8>,
}

/// Counts refused connections and logs the first few, then every 100th.
#[derive(Default)]
struct Refusals(u64);

impl Refusals {
    fn refuse(&mut self, name: &str, why: &str) {
        self.0 += 1;
        if self.0 <= 5 || self.0 % 100 == 0 {
            tracing::warn!(
                stream = name,
                refused = self.0,
                "dropped a connection to the {name} socket that is not the agent's: {why}"
            );
        }
    }
}

/// Accepts on `listener` until a connection sends `token`, and returns it (blocking,
/// with nothing of it read beyond the preamble). `None` when accepting fails.
pub fn accept_authenticated(
    listener: &UnixListener,
    token: &StdioToken,
    name: &str,
) -> Option<UnixStream> {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("the {name} socket: {e}");
        return None;
    }
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut refusals = Refusals::default();
    loop {
        let now = Instant::now();
        let wait = pending
            .front()
            .map(|p| PREAMBLE_LIMIT.saturating_sub(now - p.since))
            .map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32 + 1);
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(pending.iter().map(|p| p.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that outlives the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!("poll on the {name} socket: {e}");
            return None;
        }
        // Preambles first (indices shift as entries leave, so walk from the back).
        for i in (0..pending.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            match read_some(&mut pending[i]) {
                Ok(false) => {}
                Ok(true) => {
                    let p = pending.remove(i).expect("index in range");
                    if token.read_preamble(&mut &p.got[..]).unwrap_or(false) {
                        if let Err(e) = p.stream.set_nonblocking(false) {
                            tracing::warn!("the {name} stream: {e}");
                            return None;
                        }
                        if !pending.is_empty() {
                            tracing::debug!(stream = name, left = pending.len(), "authenticated");
                        }
                        return Some(p.stream);
                    }
                    refusals.refuse(name, "wrong token");
                }
                Err(why) => {
                    pending.remove(i);
                    refusals.refuse(name, &why);
                }
            }
        }
        let now = Instant::now();
        while pending
            .front()
            .is_some_and(|p| now - p.since >= PREAMBLE_LIMIT)
        {
            pending.pop_front();
            refusals.refuse(name, "no preamble in time");
        }
        if fds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = stream.set_nonblocking(true) {
                            refusals.refuse(name, &e.to_string());
                            continue;
                        }
                        if pending.len() == MAX_PENDING {
                            pending.pop_front();
                            refusals.refuse(name, "too many connections waiting");
                        }
                        pending.push_back(Pending {
                            stream,
                            since: Instant::now(),
                            got: Vec::with_capacity(TOKEN_LEN),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!("accepting on the {name} socket: {e}");
                        return None;
                    }
                }
            }
        }
    }
}

/// Reads what is there of the preamble, never past it. `Ok(true)`: complete.
fn read_some(p: &mut Pending) -> Result<bool, String> {
    let mut buf = [0u8; TOKEN_LEN];
    let want = TOKEN_LEN - p.got.len();
    match p.stream.read(&mut buf[..want]) {
        Ok(0) => Err("closed before its preamble".into()),
        Ok(n) => {
            p.got.extend_from_slice(&buf[..n]);
            Ok(p.got.len() == TOKEN_LEN)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        (d, path, l)
    }

    /// The authenticated stream, on a thread.
    fn accept_on_thread(
        l: UnixListener,
        token: StdioToken,
    ) -> std::thread::JoinHandle<Option<UnixStream>> {
        std::thread::spawn(move || accept_authenticated(&l, &token, "stdout"))
    }

    fn agent(path: &std::path::Path, token: &StdioToken, payload: &[u8]) {
        let mut s = UnixStream::connect(path).unwrap();
        token.write_preamble(&mut s).unwrap();
        s.write_all(payload).unwrap();
    }

    #[test]
    fn silent_and_forged_connections_before_the_agent_do_not_stop_it() {
        let (_d, path, l) = listener();
        let token = StdioToken::random().unwrap();
        let h = accept_on_thread(l, token);
        // One that connects and says nothing, one with another token, one that closes
        // half way through, one that sends the token's first half only.
        let _silent = UnixStream::connect(&path).unwrap();
        let mut forged = UnixStream::connect(&path).unwrap();
        StdioToken::random()
            .unwrap()
            .write_preamble(&mut forged)
            .unwrap();
        forged.write_all(b"fake output").unwrap();
        let mut short = UnixStream::connect(&path).unwrap();
        short.write_all(&[0; 7]).unwrap();
        drop(short);
        let mut half = UnixStream::connect(&path).unwrap();
        let mut wire = Vec::new();
        token.write_preamble(&mut wire).unwrap();
        half.write_all(&wire[..TOKEN_LEN / 2]).unwrap();
        agent(&path, &token, b"the real output");
        let mut s = h.join().unwrap().expect("the agent's stream");
        let mut got = Vec::new();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The payload, nothing of the preamble or of the other connections.
        let mut buf = [0u8; 15];
        s.read_exact(&mut buf).unwrap();
        got.extend_from_slice(&buf);
        assert_eq!(got, b"the real output");
        // The forged stream was dropped: its peer sees the close.
        forged
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // (Closed with its unread bytes: a reset, or a plain EOF.)
        match forged.read(&mut [0u8; 1]) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the forged stream is still open: {other:?}"),
        }
    }

    #[test]
    fn a_flood_of_waiting_connections_does_not_push_out_the_agent() {
        let (_d, path, l) = listener();
        let token = StdioToken::random().unwrap();
        let h = accept_on_thread(l, token);
        let flood: Vec<UnixStream> = (0..MAX_PENDING * 2)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        agent(&path, &token, b"x");
        let mut s = h.join().unwrap().expect("the agent's stream");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
        drop(flood);
    }

    #[test]
    fn a_silent_connection_is_dropped_after_the_limit() {
        let (_d, path, l) = listener();
        let token = StdioToken::random().unwrap();
        let h = accept_on_thread(l, token);
        let mut silent = UnixStream::connect(&path).unwrap();
        silent.set_read_timeout(Some(PREAMBLE_LIMIT * 3)).unwrap();
        assert_eq!(silent.read(&mut [0u8; 1]).unwrap(), 0, "closed by the shim");
        agent(&path, &token, b"");
        assert!(h.join().unwrap().is_some());
    }
}
