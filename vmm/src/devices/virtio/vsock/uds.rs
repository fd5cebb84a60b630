//! The Unix-socket end of hybrid vsock: the VMM's listener (its file removed when the
//! VMM is done with it) and non-blocking connects to host listeners.
//!
//! Paths longer than `sun_path` (runv's state directories under Docker's state root are)
//! are reached through their directory: it is opened `O_PATH` and the socket is named
//! `/proc/self/fd/<fd>/<file name>` for the bind or connect.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The VMM's hybrid-vsock listener. Dropping it removes the socket file.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path` (which must not exist: it may be another VMM's socket), non-blocking.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let (short, _dir) = short_path(path)?;
        let listener = UnixListener::bind(&short)?;
        listener.set_nonblocking(true)?;
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one client, non-blocking; `Ok(None)` when none is waiting.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                Ok(Some(stream))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("removing vsock socket {}: {e}", self.path.display());
            }
        }
    }
}

/// Longest path that fits `sun_path` with its terminating NUL.
const MAX_SUN_PATH: usize = 107;

/// `path` itself when it fits `sun_path`; else `/proc/self/fd/<fd>/<file name>` with the
/// directory's `O_PATH` fd, which must stay open until the bind or connect is done.
fn short_path(path: &Path) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    if path.as_os_str().len() <= MAX_SUN_PATH {
        return Ok((path.into(), None));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} has no directory or file name",
                path.display()
            ),
        ));
    };
    let dir: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?
        .into();
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    Ok((short, Some(dir)))
}

/// The host listener for guest connects to `port`: `<uds>_<port>`.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_os_string();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// Connects to `path` without ever blocking: a listener whose backlog is full gives
/// `WouldBlock` at once (std's connect would wait, and stall every device).
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let (short, _dir) = short_path(path)?;
    // SAFETY: sockaddr_un is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = short.as_os_str().as_bytes();
    // Keep a terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket file name of {} is too long", path.display()),
        ));
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` does not exceed its size.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_reaches_a_listener_and_refuses_nothing_listening() {
        let dir = std::env::temp_dir().join(format!("runv-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let path = port_path(&uds, 52);
        assert!(path.to_str().unwrap().ends_with("v.sock_52"));
        assert!(connect_nonblocking(&path).is_err());
        let l = UnixListener::bind(&path).unwrap();
        let s = connect_nonblocking(&path).unwrap();
        let (_a, _) = l.accept().unwrap();
        assert!(s.take_error().unwrap().is_none());
        let long = dir.join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sockets_deeper_than_sun_path_bind_and_connect() {
        let top = std::env::temp_dir().join(format!("runv-udsd-{}", std::process::id()));
        let dir = top.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        assert!(uds.as_os_str().len() > MAX_SUN_PATH);
        let l = Listener::bind(&uds).unwrap();
        assert!(uds.exists(), "the socket file is in the real directory");
        let s = connect_nonblocking(&uds).unwrap();
        assert!(s.take_error().unwrap().is_none());
        let (short, _dir) = short_path(&port_path(&uds, 7)).unwrap();
        let port = UnixListener::bind(&short).unwrap();
        let _c = connect_nonblocking(&port_path(&uds, 7)).unwrap();
        port.accept().unwrap();
        drop(l);
        assert!(!uds.exists());
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn the_listener_file_is_removed_on_drop_and_never_stolen() {
        let dir = std::env::temp_dir().join(format!("runv-udsl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let l = Listener::bind(&uds).unwrap();
        assert!(Listener::bind(&uds).is_err());
        assert!(l.accept().unwrap().is_none());
        let _c = UnixStream::connect(&uds).unwrap();
        assert!(l.accept().unwrap().is_some());
        drop(l);
        assert!(!uds.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
