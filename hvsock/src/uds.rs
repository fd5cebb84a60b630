//! Unix socket paths of any length, and the `<uds>_<port>` naming.
//!
//! `sockaddr_un.sun_path` holds 108 bytes. runv's sockets live in the container's state
//! directory, and Docker's state root alone (`/var/run/docker/runtime-runc/moby/<64
//! hex>`) leaves too little room for `v.sock_<port>`. A long path is reached through its
//! directory: the directory is opened `O_PATH` and the socket is named
//! `/proc/self/fd/<fd>/<file name>`, which bind and connect resolve like any path
//! (conmon does the same for its attach socket).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest path that fits `sockaddr_un.sun_path` with its terminating NUL.
pub const MAX_SUN_PATH: usize = 107;

/// The host listener that guest connections to vsock `port` reach: `<uds>_<port>`.
pub fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_os_string();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// A socket path short enough for bind and connect; keeps the directory open while
/// alive.
#[derive(Debug)]
pub struct ShortPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl ShortPath {
    /// `path` itself when it fits `sun_path`, else `/proc/self/fd/<fd>/<file name>`.
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= MAX_SUN_PATH {
            return Ok(ShortPath {
                path: path.into(),
                _dir: None,
            });
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
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)?;
        let short = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join(name);
        if short.as_os_str().len() > MAX_SUN_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket file name of {} is too long", path.display()),
            ));
        }
        Ok(ShortPath {
            path: short,
            _dir: Some(dir),
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

/// `UnixStream::connect` for a path of any length.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(ShortPath::new(path)?.as_path())
}

/// `UnixListener::bind` for a path of any length.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    UnixListener::bind(ShortPath::new(path)?.as_path())
}

/// Connects to `path` without ever blocking: a listener whose backlog is full gives
/// `WouldBlock` at once (std's connect would wait, and stall a VMM's event loop). The
/// stream is non-blocking; a connect still in progress shows in `take_error` later.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let short = ShortPath::new(path)?;
    // SAFETY: sockaddr_un is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = short.as_path().as_os_str().as_bytes();
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
    fn a_socket_deeper_than_sun_path_binds_and_connects() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("v.sock_1024");
        assert!(path.as_os_str().len() > MAX_SUN_PATH);
        // The plain calls cannot.
        assert!(UnixListener::bind(&path).is_err());
        let l = bind(&path).unwrap();
        assert!(path.exists(), "the socket file is in the real directory");
        let _c = connect(&path).unwrap();
        l.accept().unwrap();
        let n = connect_nonblocking(&path).unwrap();
        assert!(n.take_error().unwrap().is_none());
        l.accept().unwrap();
        // A short path is used as it is.
        assert_eq!(
            ShortPath::new(Path::new("/run/x.sock")).unwrap().as_path(),
            Path::new("/run/x.sock")
        );
        assert!(connect(&deep.join("absent.sock")).is_err());
        assert!(connect_nonblocking(&deep.join("absent.sock")).is_err());
    }

    #[test]
    fn port_paths_and_names_too_long_for_any_directory() {
        let t = tempfile::tempdir().unwrap();
        let uds = t.path().join("v.sock");
        assert!(port_path(&uds, 52).to_str().unwrap().ends_with("v.sock_52"));
        let long = t.path().join("x".repeat(200));
        assert_eq!(
            connect_nonblocking(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(bind(&long).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
