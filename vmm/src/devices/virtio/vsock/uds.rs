//! The VMM's hybrid-vsock listener: bound through `runv_hvsock::uds` (paths of any
//! length), non-blocking, its file removed when the VMM is done with it. Connects to
//! host listeners and the `<uds>_<port>` naming are `runv_hvsock::uds`'s.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

pub use runv_hvsock::uds::{connect_nonblocking, port_path};

/// The VMM's hybrid-vsock listener. Dropping it removes the socket file.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path` (which must not exist: it may be another VMM's socket), non-blocking.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let listener = runv_hvsock::uds::bind(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_file_is_removed_on_drop_and_never_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let l = Listener::bind(&uds).unwrap();
        assert!(Listener::bind(&uds).is_err());
        assert!(l.accept().unwrap().is_none());
        let _c = UnixStream::connect(&uds).unwrap();
        assert!(l.accept().unwrap().is_some());
        drop(l);
        assert!(!uds.exists());
    }

    #[test]
    fn a_listener_deeper_than_sun_path_binds_and_takes_connections() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        assert!(uds.as_os_str().len() > runv_hvsock::uds::MAX_SUN_PATH);
        let l = Listener::bind(&uds).unwrap();
        assert!(uds.exists(), "the socket file is in the real directory");
        let s = connect_nonblocking(&uds).unwrap();
        assert!(s.take_error().unwrap().is_none());
        assert!(l.accept().unwrap().is_some());
        drop(l);
        assert!(!uds.exists());
    }
}
