//! The host end of the guest's DNS relay.
//!
//! Docker writes `nameserver 127.0.0.11` into a container's resolv.conf on user-defined
//! networks and serves that address with iptables DNAT rules inside the sandbox's
//! network namespace on the host, which the guest's own loopback never reaches. The
//! agent then answers DNS on that address in the guest and relays each query as a
//! stream to the host vsock port [`DNS_RELAY_PORT`] (`<uds>_53`), where the init's
//! runv-shim, which lives in the sandbox's namespace, forwards it to the same address's
//! TCP port 53 there. Both ends frame messages as DNS over TCP does (a 2-byte length
//! before each), so this end copies bytes and never parses a message.
//!
//! Docker writes the final resolv.conf in its `libnetwork-setkey` hook, after the init's
//! shim started: the shim is given the file's path and reads the resolver from it for
//! each connection, and runv decides whether the guest relays at all when the VM boots.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::rewrite::{EntryPurpose, ShareEntry};

/// The host vsock port the guest relays DNS queries to.
pub const DNS_RELAY_PORT: u32 = 53;
/// At most this many relayed connections at once; more are refused (closed).
pub const MAX_CONNECTIONS: usize = 64;
/// How long connecting to the resolver and each read or write may take.
pub const IO_LIMIT: Duration = Duration::from_secs(5);

/// The host file bind-mounted at the container's `/etc/resolv.conf`, if any.
pub fn resolv_conf_source(entries: &[ShareEntry]) -> Option<PathBuf> {
    entries
        .iter()
        .find(|e| {
            matches!(&e.purpose, EntryPurpose::BindMount { destination, .. }
                if destination == Path::new("/etc/resolv.conf"))
        })
        .map(|e| e.host_path.clone())
}

/// The loopback nameserver `resolv_conf` names, if any: a resolver the guest's
/// loopback cannot reach by itself.
pub fn loopback_nameserver(resolv_conf: &Path) -> Option<IpAddr> {
    let text = std::fs::read_to_string(resolv_conf).ok()?;
    nameservers(&text).into_iter().find(IpAddr::is_loopback)
}

/// The `nameserver` addresses of a resolv.conf.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Where a relayed connection goes.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// The loopback nameserver of this resolv.conf (read at each connection), port 53.
    ResolvConf(PathBuf),
    /// A fixed address.
    Fixed(SocketAddr),
}

impl Upstream {
    fn resolve(&self) -> io::Result<SocketAddr> {
        match self {
            Upstream::Fixed(a) => Ok(*a),
            Upstream::ResolvConf(p) => loopback_nameserver(p)
                .map(|ip| SocketAddr::new(ip, 53))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} names no loopback nameserver", p.display()),
                    )
                }),
        }
    }
}

/// Serves `listener` on a thread of its own: each connection is copied both ways to
/// the upstream resolver's TCP port 53.
pub fn spawn(listener: UnixListener, upstream: Upstream) -> io::Result<()> {
    std::thread::Builder::new()
        .name("dns-relay".into())
        .spawn(move || serve(listener, upstream))?;
    Ok(())
}

/// The accept loop (returns when the listener fails).
pub fn serve(listener: UnixListener, upstream: Upstream) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            tracing::warn!("dns relay: accept failed; relay stopped");
            return;
        };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            // Closing it is the answer: the guest's resolver times out or retries.
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let active = active.clone();
        let upstream = upstream.clone();
        let spawned = std::thread::Builder::new()
            .name("dns-conn".into())
            .spawn(move || {
                let r = upstream.resolve().and_then(|to| relay(conn, to));
                if let Err(e) = r {
                    tracing::debug!("dns relay: {e}");
                }
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            tracing::warn!("dns relay: cannot start a thread");
        }
    }
}

/// One connection: guest -> resolver on a thread, resolver -> guest here.
fn relay(guest: UnixStream, upstream: SocketAddr) -> io::Result<()> {
    let resolver = TcpStream::connect_timeout(&upstream, IO_LIMIT)?;
    resolver.set_read_timeout(Some(IO_LIMIT))?;
    resolver.set_write_timeout(Some(IO_LIMIT))?;
    guest.set_read_timeout(Some(IO_LIMIT))?;
    guest.set_write_timeout(Some(IO_LIMIT))?;
    let (mut g_in, mut r_out) = (guest.try_clone()?, resolver.try_clone()?);
    let up = std::thread::Builder::new()
        .name("dns-up".into())
        .spawn(move || {
            let _ = io::copy(&mut g_in, &mut r_out);
            let _ = r_out.shutdown(Shutdown::Write);
        })?;
    let (mut r_in, mut g_out) = (resolver, guest);
    let down = io::copy(&mut r_in, &mut g_out);
    let _ = g_out.shutdown(Shutdown::Both);
    let _ = r_in.shutdown(Shutdown::Both);
    let _ = up.join();
    down.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn only_a_loopback_nameserver_needs_the_relay() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("resolv.conf");
        let entry = |dest: &str| ShareEntry {
            host_path: file.clone(),
            location: runv_agent_protocol::ShareLocation {
                tag: "runv".into(),
                subpath: "c/mounts/0".into(),
            },
            kind: crate::rewrite::EntryKind::File,
            readonly: false,
            recursive: false,
            purpose: EntryPurpose::BindMount {
                index: 0,
                destination: dest.into(),
            },
        };
        std::fs::write(&file, "search x\nnameserver 127.0.0.11\noptions ndots:0\n").unwrap();
        assert_eq!(
            resolv_conf_source(&[entry("/etc/resolv.conf")]),
            Some(file.clone())
        );
        assert_eq!(resolv_conf_source(&[entry("/etc/hosts")]), None);
        assert_eq!(
            loopback_nameserver(&file),
            Some("127.0.0.11".parse().unwrap())
        );
        std::fs::write(&file, "nameserver 8.8.8.8\nnameserver bogus\n").unwrap();
        assert_eq!(loopback_nameserver(&file), None);
        assert_eq!(loopback_nameserver(&t.path().join("absent")), None);
        assert_eq!(
            nameservers("nameserver ::1\n# nameserver 1.1.1.1\nnameserver 10.0.0.2"),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_query_is_relayed_to_the_resolver_and_its_answer_back() {
        let resolver = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = resolver.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in resolver.incoming().take(2) {
                let mut c = c.unwrap();
                let mut len = [0u8; 2];
                c.read_exact(&mut len).unwrap();
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                c.read_exact(&mut q).unwrap();
                q.reverse();
                c.write_all(&len).unwrap();
                c.write_all(&q).unwrap();
            }
        });
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("v.sock_53");
        let l = UnixListener::bind(&sock).unwrap();
        // The resolver as the shim finds it: in a resolv.conf written after it started.
        let resolv = t.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.1\n").unwrap();
        let up = Upstream::ResolvConf(resolv.clone());
        assert!(up.resolve().is_err(), "no loopback nameserver yet");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(up.resolve().unwrap().port(), 53);
        std::thread::spawn(move || serve(l, Upstream::Fixed(upstream)));
        for _ in 0..2 {
            let mut g = UnixStream::connect(&sock).unwrap();
            g.write_all(&[0, 3, b'a', b'b', b'c']).unwrap();
            let mut answer = [0u8; 5];
            g.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, &[0, 3, b'c', b'b', b'a']);
        }
    }

    #[test]
    fn a_resolver_that_is_not_there_closes_the_guest_stream() {
        // A port nothing listens on: connect is refused, the guest's stream is closed.
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = free.local_addr().unwrap();
        drop(free);
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("v.sock_53");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || serve(l, Upstream::Fixed(upstream)));
        let mut g = UnixStream::connect(&sock).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = g.write_all(&[0, 1, 0]);
        let mut b = [0u8; 1];
        // Closed: EOF, or a reset since the query was never read.
        match g.read(&mut b) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
}
