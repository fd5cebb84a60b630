//! A synchronous rtnetlink client, for runv's host side (taps and tc filters in a
//! sandbox's network namespace) and for the guest agent (its interfaces, addresses,
//! routes and neighbours).
//!
//! Two layers. The transport ([`Rtnl::request_raw`]) sends a request given its `RTM_*`
//! type and any `Emitable` body on a blocking `netlink-sys` socket, and returns the
//! answers of that request as raw `(type, payload)` messages: a kernel refusal is an
//! error that keeps the errno and the extended ack text, and every request has a time
//! limit. On top of it, [`Rtnl::request`] and [`Rtnl::dump`] take and return
//! `netlink-packet-route`'s generic `RouteNetlinkMessage`s (runv uses them). The guest
//! agent calls only the transport, so the generic decoder, which holds the code of
//! every message type the crate knows (about 380 KB), is not linked into the image
//! every VM boots. No async runtime: both make a handful of calls at a time.
//!
//! [`in_netns`] runs a closure on a thread of its own that has joined a network
//! namespace (`setns` of a network namespace only changes the calling thread).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

mod decoded;
mod transport;

pub use transport::{serialize, RawMessage, Rtnl, REPLY_LIMIT};

pub use netlink_packet_core as core;
pub use netlink_packet_route as route;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("netlink {what}: {source}")]
    Io { what: String, source: io::Error },
    /// The kernel refused the request: its errno, and its extended ack text if any.
    #[error("netlink {what}: {}", refusal_text(*errno, message.as_deref()))]
    Refused {
        what: String,
        errno: i32,
        message: Option<String>,
    },
    #[error("netlink {what}: undecodable answer: {reason}")]
    Decode { what: String, reason: String },
    #[error("netlink {what}: no answer within {limit:?}")]
    Timeout { what: String, limit: Duration },
    #[error("network namespace {path}: {source}")]
    Netns { path: String, source: io::Error },
}

/// How a refusal reads: the errno's text, then the kernel's extended ack text if any
/// ("Invalid argument (os error 22): Nexthop has invalid gateway").
pub fn refusal_text(errno: i32, message: Option<&str>) -> String {
    let e = io::Error::from_raw_os_error(errno);
    match message {
        Some(m) if !m.is_empty() => format!("{e}: {m}"),
        _ => e.to_string(),
    }
}

impl Error {
    /// The errno of a kernel refusal (`EEXIST`, `ENODEV`, ...).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Runs `f` on a new thread that has joined the network namespace at `path` (a
/// `/var/run/netns/...` bind mount or `/proc/<pid>/ns/net`), and returns its result.
/// Sockets and taps opened by `f` stay in that namespace whichever thread uses them
/// later.
pub fn in_netns<T, F>(path: &Path, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let netns_err = |source: io::Error| Error::Netns {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(netns_err)?;
    let handle = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> io::Result<T> {
            // SAFETY: setns on an open namespace fd; it changes only this thread, which
            // ends when `f` returns.
            if unsafe { libc::setns(file.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .map_err(netns_err)?;
    match handle.join() {
        Ok(r) => r.map_err(netns_err),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `f` on a new thread in a fresh, empty network namespace (tests and probes).
pub fn in_new_netns<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("netns-new".into())
        .spawn(move || -> io::Result<T> {
            // SAFETY: unshare of the network namespace changes only this thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .map_err(|source| Error::Netns {
            path: "(new)".into(),
            source,
        })?;
    match handle.join() {
        Ok(r) => r.map_err(|source| Error::Netns {
            path: "(new)".into(),
            source,
        }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named() {
        let e = in_netns(Path::new("/nonexistent/ns"), || ()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    }

    #[test]
    #[ignore = "needs root: creates a network namespace"]
    fn root_a_new_namespace_has_only_lo_and_in_netns_joins_the_named_one() {
        let links = |rtnl: &mut Rtnl| decoded::tests::links(rtnl);
        let names = in_new_netns(move || {
            links(&mut Rtnl::open().unwrap())
                .into_iter()
                .map(|(_, n)| n)
                .collect::<Vec<_>>()
        })
        .unwrap();
        assert_eq!(names, vec!["lo".to_string()]);
        // The caller's own namespace by path: the same links as on this thread.
        let here = links(&mut Rtnl::open().unwrap());
        let there = in_netns(Path::new("/proc/self/ns/net"), move || {
            links(&mut Rtnl::open().unwrap())
        })
        .unwrap();
        assert_eq!(here, there);
    }
}
