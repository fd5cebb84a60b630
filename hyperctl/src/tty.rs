//! `hyperctl run -t`: the console socket runv hands the PTY master to (runc's
//! `--console-socket` protocol: one `SCM_RIGHTS` fd), raw mode on the user's terminal
//! (restored on drop), window size, and the relay between the two.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// The user's terminal in raw mode; its settings come back when this is dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin if it is a terminal; `None` otherwise.
    pub fn enter() -> Result<Option<Self>> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false) {
            return Ok(None);
        }
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal settings of stdin")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("setting stdin to raw mode")?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of terminal `from` to terminal `to`; nothing if `from` has none.
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: all-zero is a valid winsize.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call; the fd is
    // borrowed, so open.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return;
    }
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`; the fd is borrowed, so open.
    unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// What came first on the console socket: the PTY master, or the exit of runv (which
/// then failed before it had a terminal to send).
pub enum Handover {
    Master(OwnedFd),
    Exited(ExitStatus),
}

/// Waits for runv (`child`) to connect to `listener` and send the master.
pub fn receive_master(listener: &UnixListener, path: &Path, child: &mut Child) -> Result<Handover> {
    listener
        .set_nonblocking(true)
        .with_context(|| format!("console socket {}", path.display()))?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().context("waiting for runv")? {
                    return Ok(Handover::Exited(status));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("console socket {}", path.display())),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .with_context(|| format!("console socket {}", path.display()))?;
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .with_context(|| format!("receiving the pty master on {}", path.display()))?;
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .context("reading the console socket's control message")?
    {
        if let ControlMessageOwned::ScmRights(received) = c {
            for fd in received {
                // SAFETY: SCM_RIGHTS just installed `fd` in this process; nothing else
                // owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if fds.len() != 1 {
        bail!(
            "console socket {}: expected one file descriptor, got {}",
            path.display(),
            fds.len()
        );
    }
    Ok(Handover::Master(fds.remove(0)))
}

/// Copies `from` to `to` until `from` ends (EOF, or EIO: a PTY master whose slave side
/// is closed) or `to` fails.
pub fn pump(mut from: File, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn master_handover_and_relay() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        // A child that is still running while the fd arrives.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let sender = {
            let sock = sock.clone();
            let master = pty.master.try_clone().unwrap();
            std::thread::spawn(move || {
                let s = UnixStream::connect(&sock).unwrap();
                let fds = [master.as_raw_fd()];
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
                nix::sys::socket::sendmsg::<()>(
                    s.as_raw_fd(),
                    &[std::io::IoSlice::new(b"/dev/pts/x")],
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                )
                .unwrap();
            })
        };
        let Handover::Master(master) = receive_master(&listener, &sock, &mut child).unwrap() else {
            panic!("runv exit reported");
        };
        sender.join().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        // The received master works: what the slave writes comes out of pump.
        let mut slave = File::from(pty.slave);
        slave.write_all(b"hello\n").unwrap();
        drop(slave);
        drop(pty.master);
        let mut out = Vec::new();
        pump(File::from(master), &mut out);
        assert_eq!(String::from_utf8_lossy(&out).replace('\r', ""), "hello\n");
    }

    #[test]
    fn runv_exiting_first_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        match receive_master(&listener, &sock, &mut child).unwrap() {
            Handover::Exited(s) => assert_eq!(s.code(), Some(7)),
            Handover::Master(_) => panic!("no fd was sent"),
        }
    }

    #[test]
    fn a_connection_without_fd_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("console.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(b"no fd").unwrap();
        let e = receive_master(&listener, &sock, &mut child).err().unwrap();
        assert!(
            format!("{e:#}").contains("expected one file descriptor, got 0"),
            "{e:#}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
