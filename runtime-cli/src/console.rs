//! Host PTYs for `terminal: true`: allocation, raw mode, window size, and handing the
//! master to `--console-socket` exactly as runc does (one `SCM_RIGHTS` fd, the payload
//! being the PTY's name).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("allocating a pty: {0}")]
    Open(nix::Error),
    #[error("console socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("terminal settings: {0}")]
    Termios(nix::Error),
    #[error("making the pty the controlling terminal: {0}")]
    Ctty(std::io::Error),
}

/// A host PTY pair.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// `/dev/pts/N`.
    pub name: String,
}

/// Allocates a PTY (master and slave close-on-exec).
pub fn open_pty() -> Result<Pty, ConsoleError> {
    let r = nix::pty::openpty(None, None).map_err(ConsoleError::Open)?;
    for fd in [&r.master, &r.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(ConsoleError::Open)?;
    }
    let name = std::fs::read_link(format!("/proc/self/fd/{}", r.slave.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/dev/pts/?".into());
    Ok(Pty {
        master: r.master,
        slave: r.slave,
        name,
    })
}

/// Sends `master` over the Unix socket at `socket`, with `name` as the data.
pub fn send_console(socket: &Path, master: BorrowedFd<'_>, name: &str) -> Result<(), ConsoleError> {
    let err = |source| ConsoleError::Socket {
        path: socket.into(),
        source,
    };
    let s = runv_hvsock::uds::connect(socket).map_err(err)?;
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(|e| err(e.into()))?;
    Ok(())
}

/// Puts a terminal in raw mode; returns the previous settings.
pub fn make_raw(fd: BorrowedFd<'_>) -> Result<Termios, ConsoleError> {
    let old = tcgetattr(fd).map_err(ConsoleError::Termios)?;
    let mut raw = old.clone();
    cfmakeraw(&mut raw);
    tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(ConsoleError::Termios)?;
    Ok(old)
}

/// Restores terminal settings.
pub fn restore(fd: BorrowedFd<'_>, t: &Termios) {
    let _ = tcsetattr(fd, SetArg::TCSANOW, t);
}

/// Makes `slave` the controlling terminal of this process, in a new session (so that
/// a resize of the master delivers SIGWINCH here).
pub fn take_as_ctty(slave: RawFd) -> Result<(), ConsoleError> {
    // SAFETY: setsid has no memory effects; failing (already a group leader) is reported.
    if unsafe { libc::setsid() } < 0 {
        return Err(ConsoleError::Ctty(std::io::Error::last_os_error()));
    }
    // SAFETY: TIOCSCTTY takes an int argument; slave is an open terminal fd.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
        return Err(ConsoleError::Ctty(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A terminal's window size (rows, cols), if `fd` is a terminal.
pub fn window_size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets a terminal's window size.
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from the valid pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// True if `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::io::IoSliceMut;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;

    #[test]
    fn master_travels_over_the_console_socket() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("console.sock");
        let l = UnixListener::bind(&path).unwrap();
        let pty = open_pty().unwrap();
        assert!(pty.name.starts_with("/dev/pts/"), "{}", pty.name);
        send_console(&path, pty.master.as_fd(), &pty.name).unwrap();
        let (c, _) = l.accept().unwrap();
        let mut buf = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg =
            recvmsg::<()>(c.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        let mut got = None;
        for cm in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(fds) = cm {
                got = fds.first().copied();
            }
        }
        let n = msg.bytes;
        assert_eq!(&buf[..n], pty.name.as_bytes());
        let fd = got.expect("an fd");
        // The received fd is the same PTY: a size set on it shows on the slave.
        set_window_size(fd, 33, 101).unwrap();
        assert_eq!(window_size(pty.slave.as_raw_fd()), Some((33, 101)));
        // SAFETY: fd was just received and is owned by nobody else.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn raw_mode_round_trip() {
        let pty = open_pty().unwrap();
        let old = make_raw(pty.slave.as_fd()).unwrap();
        let now = tcgetattr(pty.slave.as_fd()).unwrap();
        assert!(!now
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO));
        restore(pty.slave.as_fd(), &old);
        assert!(!is_tty(std::io::stdin().as_raw_fd()) || window_size(0).is_some());
    }
}
