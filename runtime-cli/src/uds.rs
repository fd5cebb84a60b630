//! Unix socket paths longer than `sun_path` (108 bytes). runv's sockets live in the
//! container's state directory, and Docker's state root alone
//! (`/var/run/docker/runtime-runc/moby/<64 hex>`) leaves too little room for
//! `v.sock_<port>`. A long path is reached through its directory instead: the directory
//! is opened (`O_PATH`) and the socket is named `/proc/self/fd/<fd>/<file name>`, which
//! bind and connect resolve like any path (conmon does the same for its attach socket).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest path that fits `sockaddr_un.sun_path` with its terminating NUL.
const MAX_SUN_PATH: usize = 107;

/// A socket path short enough for bind/connect; keeps the directory open while alive.
pub struct ShortPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl ShortPath {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_deeper_than_sun_path_binds_and_connects() {
        let t = crate::test_util::TempDir::new("uds");
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
        // A short path is used as it is.
        assert_eq!(
            ShortPath::new(Path::new("/run/x.sock")).unwrap().as_path(),
            Path::new("/run/x.sock")
        );
        assert!(connect(&deep.join("absent.sock")).is_err());
    }
}
