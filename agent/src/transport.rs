//! Where the agent listens for control connections and how it reaches the host for a
//! process's stdio streams.
//!
//! Stdio ports follow the hybrid-vsock convention of runv-vmm: in the guest the agent
//! connects to the host (CID 2) at port P, which the VMM hands to the host's Unix
//! socket `<uds>_<P>`. In host mode the agent connects to `<stdio-base>_<P>` itself, so a
//! host-side client that listens on `<base>_<P>` works unchanged with either agent.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use runv_agent_protocol::SetTimeout;
use vsock::{VsockListener, VsockStream, VMADDR_CID_ANY, VMADDR_CID_HOST};

/// A `--listen` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `vsock` or `vsock:PORT`
    Vsock(u32),
}

/// Why a `--listen` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("listen address {0:?}: expected unix:PATH, vsock or vsock:PORT")]
    Syntax(String),
    #[error("listen address {0:?}: bad vsock port")]
    Port(String),
}

impl FromStr for ListenAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddrError::Syntax(s.into()));
            }
            return Ok(ListenAddr::Unix(path.into()));
        }
        if s == "vsock" {
            return Ok(ListenAddr::Vsock(runv_agent_protocol::AGENT_VSOCK_PORT));
        }
        if let Some(port) = s.strip_prefix("vsock:") {
            return port
                .parse()
                .map(ListenAddr::Vsock)
                .map_err(|_| AddrError::Port(s.into()));
        }
        Err(AddrError::Syntax(s.into()))
    }
}

/// A bound control socket.
pub enum Listener {
    Unix(UnixListener),
    Vsock(VsockListener),
}

impl Listener {
    pub fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Unix(path) => {
                // A stale socket from an earlier run would make bind fail.
                let _ = std::fs::remove_file(path);
                UnixListener::bind(path).map(Listener::Unix)
            }
            ListenAddr::Vsock(port) => {
                VsockListener::bind_with_cid_port(VMADDR_CID_ANY, *port).map(Listener::Vsock)
            }
        }
    }

    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Vsock(l) => l.accept().map(|(s, _)| Stream::Vsock(s)),
        }
    }
}

/// A connected stream of either kind.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Vsock(VsockStream),
}

impl Stream {
    #[allow(dead_code)]
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
            Stream::Vsock(s) => s.try_clone().map(Stream::Vsock),
        }
    }

    /// Tells the peer no more data comes (it reads EOF).
    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Vsock(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Vsock(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Vsock(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SetTimeout for Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Vsock(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Vsock(s) => s.set_write_timeout(t),
        }
    }
}

/// How the agent reaches the host's stdio listeners.
#[derive(Debug, Clone)]
pub enum StdioConnector {
    /// Host mode: Unix sockets `<base>_<port>`, as runv-vmm maps guest connects.
    Unix(PathBuf),
    /// Guest mode: vsock to the host, CID 2.
    Vsock,
}

impl StdioConnector {
    pub fn connect(&self, port: u32) -> io::Result<Stream> {
        match self {
            StdioConnector::Unix(base) => {
                let path = runv_hvsock::port_path(base, port);
                UnixStream::connect(&path).map(Stream::Unix).map_err(|e| {
                    io::Error::new(e.kind(), format!("connect {}: {e}", path.display()))
                })
            }
            StdioConnector::Vsock => VsockStream::connect_with_cid_port(VMADDR_CID_HOST, port)
                .map(Stream::Vsock)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("vsock connect to host port {port}: {e}"))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!("unix:/tmp/a".parse(), Ok(ListenAddr::Unix("/tmp/a".into())));
        assert_eq!("vsock".parse(), Ok(ListenAddr::Vsock(1024)));
        assert_eq!("vsock:77".parse(), Ok(ListenAddr::Vsock(77)));
        assert!(matches!(
            "vsock:x".parse::<ListenAddr>(),
            Err(AddrError::Port(_))
        ));
        assert!(matches!(
            "tcp:1".parse::<ListenAddr>(),
            Err(AddrError::Syntax(_))
        ));
        assert!(matches!(
            "unix:".parse::<ListenAddr>(),
            Err(AddrError::Syntax(_))
        ));
    }
}
