//! Copying between the shim's fds (or its PTY) and the process's vsock streams.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use runv_agent_protocol::StdioToken;

/// A stdio socket the agent connects to: `<uds>_<port>`.
pub struct Listener {
    pub name: &'static str,
    pub path: PathBuf,
    pub listener: UnixListener,
}

impl Listener {
    pub fn bind(uds: &std::path::Path, name: &'static str, port: u32) -> std::io::Result<Self> {
        let path = runv_hvsock::port_path(uds, port);
        let _ = std::fs::remove_file(&path);
        let listener = runv_hvsock::uds::bind(&path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding {} ({name}): {e}", path.display()),
            )
        })?;
        Ok(Listener {
            name,
            path,
            listener,
        })
    }

    /// Accepts the agent's connection on a thread: with a token, the first that begins
    /// with it (crate::auth), else the first. The stream arrives on the channel.
    pub fn accept_in_background(
        self,
        token: Option<StdioToken>,
    ) -> (mpsc::Receiver<UnixStream>, PathBuf) {
        let (tx, rx) = mpsc::channel();
        let path = self.path.clone();
        let name = self.name;
        std::thread::spawn(move || {
            let stream = match token {
                Some(t) => crate::auth::accept_authenticated(&self.listener, &t, name),
                None => self
                    .listener
                    .accept()
                    .map(|(s, _)| s)
                    .map_err(|e| tracing::warn!("accepting the {name} stream: {e}"))
                    .ok(),
            };
            if let Some(s) = stream {
                let _ = tx.send(s);
            }
        });
        (rx, path)
    }
}

/// A duplicate of one of this process's fds as a File.
pub fn dup_fd(fd: i32) -> std::io::Result<File> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new fd that nothing else owns.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: n is a fresh fd owned by the returned File.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(n) }))
}

/// stdin: `source` to the stream until EOF, then the stream's write side is shut down.
/// The half-close travels behind the data (runv-vmm's vsock sends SHUTDOWN(SEND) only
/// after the stream's last byte), so the process reads everything and then EOF. No
/// `close_stdin` call follows: on its own connection it could overtake bytes still in
/// flight and cut the process's input short.
pub fn spawn_stdin(mut source: File, stream: mpsc::Receiver<UnixStream>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = stream.recv() else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match source.read(&mut buf) {
                // EIO: the PTY's other side is gone; treat as EOF.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// stdout/stderr: the stream to `sink` until EOF. A sink that fails (the reader went
/// away) does not stop the reading: the output is then discarded, so the process never
/// blocks on a full pipe.
pub fn spawn_output(stream: mpsc::Receiver<UnixStream>, mut sink: File) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = stream.recv() else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        let mut sink_ok = true;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sink_ok && sink.write_all(&buf[..n]).is_err() {
                        sink_ok = false;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sink.flush();
    })
}

/// Joins the output relays, waiting at most `limit` in all.
pub fn join_all(handles: Vec<JoinHandle<()>>, limit: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}
