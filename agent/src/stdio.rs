//! A container process's stdio: pipes (or a PTY for `terminal: true`) on the process
//! side, relayed by threads to the host's per-process streams.
//!
//! The process never sees a socket, so `echo x > /dev/stdout` (a reopen of
//! /proc/self/fd/1) works. Output is "drained" when every output relay has seen EOF;
//! the exit is reported after that, or [`DRAIN_GRACE`] after the exit when a
//! descendant keeps the pipe open.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::pipe2;
use runv_agent_protocol::StdioPorts;

use crate::reaper::lock;
use crate::transport::{StdioConnector, Stream};

/// How long output may stay open after the process exited.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("stdio.{name} port {port}: {source}")]
    Connect {
        name: &'static str,
        port: u32,
        source: io::Error,
    },
    #[error("stdio.stderr: must be absent with process.terminal (the PTY carries both outputs)")]
    StderrWithTerminal,
    #[error("creating a pipe: {0}")]
    Pipe(nix::Error),
    #[error("opening /dev/null: {0}")]
    DevNull(io::Error),
    #[error("console socket {path}: {source}")]
    Console { path: PathBuf, source: io::Error },
}

/// Counts output relays still running.
#[derive(Default)]
pub struct Drain {
    open: Mutex<usize>,
    cv: Condvar,
}

impl Drain {
    fn add(&self) {
        *lock(&self.open) += 1;
    }
    fn done(&self) {
        let mut g = lock(&self.open);
        *g -= 1;
        self.cv.notify_all();
    }
    /// Waits until every output relay ended, or `limit` passed.
    pub fn wait(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut g = lock(&self.open);
        while *g > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// The agent's side of a process's stdio, after the process was created.
#[derive(Default)]
pub struct Relay {
    pub drain: Arc<Drain>,
    /// Where the host's stdin goes; `None` once closed.
    stdin: Arc<Mutex<Option<File>>>,
    /// The PTY master, for resizing.
    pub pty: Arc<Mutex<Option<OwnedFd>>>,
}

impl Relay {
    /// The process reads EOF on stdin (for a PTY: nothing, the PTY stays).
    pub fn close_stdin(&self) {
        lock(&self.stdin).take();
    }

    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let g = lock(&self.pty);
        let Some(fd) = g.as_ref() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the process has no terminal",
            ));
        };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; fd is an open PTY master.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What the process gets: its three fds, or a console socket to receive the PTY on.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub console: Option<ConsoleSocket>,
}

/// Sets up a process's stdio: connects to the host's ports, makes the pipes and starts
/// the relays (for a terminal, the relays start in [`ConsoleSocket::finish`]).
pub fn prepare(
    connector: &StdioConnector,
    ports: &StdioPorts,
    terminal: bool,
    console_path: &Path,
) -> Result<(ChildStdio, Relay), StdioError> {
    if terminal && ports.stderr.is_some() {
        return Err(StdioError::StderrWithTerminal);
    }
    let connect = |name: &'static str, port: Option<u32>| -> Result<Option<Stream>, StdioError> {
        port.map(|port| {
            let mut stream = connector
                .connect(port)
                .map_err(|source| StdioError::Connect { name, port, source })?;
            // The preamble that tells the shim this stream is the agent's.
            if let Some(token) = &ports.token {
                token
                    .write_preamble(&mut stream)
                    .map_err(|source| StdioError::Connect { name, port, source })?;
            }
            Ok(stream)
        })
        .transpose()
    };
    let stdin = connect("stdin", ports.stdin)?;
    let stdout = connect("stdout", ports.stdout)?;
    let stderr = connect("stderr", ports.stderr)?;
    let relay = Relay::default();
    let null = || -> Result<OwnedFd, StdioError> {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(StdioError::DevNull)
    };

    if terminal {
        let _ = std::fs::remove_file(console_path);
        let listener = UnixListener::bind(console_path).map_err(|source| StdioError::Console {
            path: console_path.into(),
            source,
        })?;
        let child = ChildStdio {
            stdin: null()?,
            stdout: null()?,
            stderr: null()?,
            console: None,
        };
        let console = ConsoleSocket {
            path: console_path.into(),
            listener,
            stdin,
            stdout,
        };
        return Ok((
            ChildStdio {
                console: Some(console),
                ..child
            },
            relay,
        ));
    }

    let child_stdin = match stdin {
        Some(stream) => {
            let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)?;
            *lock(&relay.stdin) = Some(File::from(w));
            spawn_stdin(stream, relay.stdin.clone());
            r
        }
        None => {
            // An empty pipe whose write end is closed: the process reads EOF.
            let (r, _w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)?;
            r
        }
    };
    let output = |stream: Option<Stream>| -> Result<OwnedFd, StdioError> {
        match stream {
            Some(stream) => {
                let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(StdioError::Pipe)?;
                spawn_output(File::from(r), stream, relay.drain.clone());
                Ok(w)
            }
            None => null(),
        }
    };
    let child_stdout = output(stdout)?;
    let child_stderr = output(stderr)?;
    Ok((
        ChildStdio {
            stdin: child_stdin,
            stdout: child_stdout,
            stderr: child_stderr,
            console: None,
        },
        relay,
    ))
}

/// The socket libcontainer sends a terminal process's PTY master to.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
}

impl ConsoleSocket {
    /// Receives the PTY master (the process is built by now) and starts the relays.
    pub fn finish(self, relay: &Relay) -> Result<(), StdioError> {
        let err = |source| StdioError::Console {
            path: self.path.clone(),
            source,
        };
        self.listener.set_nonblocking(true).map_err(err)?;
        let (conn, _) = self.listener.accept().map_err(err)?;
        conn.set_nonblocking(false).map_err(err)?;
        let master = recv_fd(conn.as_raw_fd()).map_err(err)?;
        let _ = std::fs::remove_file(&self.path);
        let read_side = master.try_clone().map_err(err)?;
        if let Some(stdout) = self.stdout {
            spawn_output(File::from(read_side), stdout, relay.drain.clone());
        }
        if let Some(stdin) = self.stdin {
            let w = master.try_clone().map_err(err)?;
            spawn_stdin(stdin, Arc::new(Mutex::new(Some(File::from(w)))));
        }
        *lock(&relay.pty) = Some(master);
        Ok(())
    }
}

fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in the console message",
    ))
}

fn spawn_stdin(mut stream: Stream, sink: Arc<Mutex<Option<File>>>) {
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Not holding the lock across the read: close_stdin must not wait for input.
                let file = lock(&sink).as_ref().and_then(|f| f.try_clone().ok());
                let written = file.is_some_and(|mut f| f.write_all(&buf[..n]).is_ok());
                if !written {
                    break;
                }
            }
            lock(&sink).take();
        });
}

fn spawn_output(mut source: File, mut stream: Stream, drain: Arc<Drain>) {
    drain.add();
    let spawned = std::thread::Builder::new().name("output".into()).spawn({
        let drain = drain.clone();
        move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                // A PTY master reads EIO once the last slave fd is closed: that is EOF.
                let n = match source.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            stream.shutdown_write();
            drain.done();
        }
    });
    if spawned.is_err() {
        drain.done();
    }
}
