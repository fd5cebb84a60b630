//! The DNS relay: serves `address:53` on UDP and TCP in the guest and hands each
//! query to the host over a stream of its own (vsock, CID 2, the relay's port): one
//! query framed with a 2-byte big-endian length (DNS over TCP, RFC 1035 4.2.2), one
//! framed answer back, then the stream is closed.
//!
//! Bounded: at most `max_in_flight` UDP queries and TCP connections at once (more
//! are dropped; DNS clients retry), each host exchange within `query_timeout`, a TCP
//! client idle for `idle_timeout` is closed, UDP queries over 512 bytes are dropped
//! (a TCP message is at most 65535 by its framing). Nothing a client sends stops the
//! relay, and warnings are logged at most once per kind per `WARN_INTERVAL`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runv_agent_protocol::{Deadline, SetTimeout};

use crate::transport::{StdioConnector, Stream};

/// Largest DNS message over UDP without EDNS (RFC 1035 4.2.1).
pub const MAX_UDP_QUERY: usize = 512;
/// Largest UDP payload (IPv4): a bigger answer cannot be sent back as a datagram.
const MAX_UDP_ANSWER: usize = 65507;
/// A DNS header is 12 bytes; anything shorter is not a query.
const DNS_HEADER: usize = 12;
/// How often each kind of warning may be logged.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// The relay's threads do little: small stacks (buffers are on the heap).
const STACK_SIZE: usize = 64 * 1024;

/// How the relay reaches the host: a fresh stream per query.
pub trait Connect: Send + Sync + 'static {
    type Stream: Read + Write + SetTimeout + Send + 'static;
    fn connect(&self) -> io::Result<Self::Stream>;
}

/// The guest's way: vsock to the host (CID 2) at `port`, as for stdio streams.
pub struct VsockHost {
    pub port: u32,
}

impl Connect for VsockHost {
    type Stream = Stream;
    fn connect(&self) -> io::Result<Stream> {
        StdioConnector::Vsock.connect(self.port)
    }
}

/// The relay's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// UDP queries and TCP connections at once.
    pub max_in_flight: usize,
    /// One exchange with the host (connect excepted: vsock bounds it), and writing an
    /// answer to a TCP client.
    pub query_timeout: Duration,
    /// A TCP client must send its next whole query within this.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 64,
            query_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// The kinds of warning the relay rate-limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warn {
    Oversize,
    Malformed,
    Busy,
    Host,
    Client,
    Socket,
}

const WARN_KINDS: usize = 6;

impl Warn {
    fn name(self) -> &'static str {
        match self {
            Warn::Oversize => "oversize",
            Warn::Malformed => "malformed",
            Warn::Busy => "busy",
            Warn::Host => "host",
            Warn::Client => "client",
            Warn::Socket => "socket",
        }
    }
}

/// At most one warning per kind per interval; the ones held back are counted and the
/// count is logged with the next one.
struct WarnLimiter {
    interval: Duration,
    last: Mutex<[Option<Instant>; WARN_KINDS]>,
    held_back: [AtomicU64; WARN_KINDS],
}

impl WarnLimiter {
    fn new(interval: Duration) -> Self {
        WarnLimiter {
            interval,
            last: Mutex::new([None; WARN_KINDS]),
            held_back: Default::default(),
        }
    }

    /// Logs unless this kind was logged within the interval. Returns whether it logged.
    fn warn(&self, kind: Warn, message: std::fmt::Arguments<'_>) -> bool {
        let i = kind as usize;
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last[i].is_some_and(|t| now.duration_since(t) < self.interval) {
                self.held_back[i].fetch_add(1, Ordering::Relaxed);
                return false;
            }
            last[i] = Some(now);
        }
        let held_back = self.held_back[i].swap(0, Ordering::Relaxed);
        tracing::warn!(kind = kind.name(), held_back, "dns relay: {message}");
        true
    }
}

struct Shared<C> {
    connector: C,
    limits: Limits,
    in_flight: AtomicUsize,
    warn: WarnLimiter,
}

/// One of the `max_in_flight` places, given back on drop.
struct Slot<C: Connect>(Arc<Shared<C>>);

impl<C: Connect> Drop for Slot<C> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn try_slot<C: Connect>(shared: &Arc<Shared<C>>) -> Option<Slot<C>> {
    let max = shared.limits.max_in_flight;
    shared
        .in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(shared.clone()))
}

/// A running relay (its threads live as long as the agent).
pub struct Relay<C> {
    /// Where it serves (UDP and TCP, same port).
    #[allow(dead_code)]
    pub address: SocketAddr,
    #[allow(dead_code)]
    shared: Arc<Shared<C>>,
}

#[cfg(test)]
impl<C: Connect> Relay<C> {
    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

/// Binds `address` on UDP and TCP (with port 0: a free UDP port, and TCP on the same
/// one) and starts serving.
pub fn start<C: Connect>(
    address: SocketAddr,
    connector: C,
    limits: Limits,
) -> io::Result<Relay<C>> {
    let udp = UdpSocket::bind(address)?;
    let address = udp.local_addr()?;
    let tcp = TcpListener::bind(address)?;
    let shared = Arc::new(Shared {
        connector,
        limits,
        in_flight: AtomicUsize::new(0),
        warn: WarnLimiter::new(WARN_INTERVAL),
    });
    let udp = Arc::new(udp);
    let s = shared.clone();
    std::thread::Builder::new()
        .name("dns-udp".into())
        .stack_size(STACK_SIZE)
        .spawn(move || serve_udp(&s, &udp))?;
    let s = shared.clone();
    std::thread::Builder::new()
        .name("dns-tcp".into())
        .stack_size(STACK_SIZE)
        .spawn(move || serve_tcp(&s, &tcp))?;
    Ok(Relay { address, shared })
}

fn spawn_worker(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("dns-query".into())
        .stack_size(STACK_SIZE)
        .spawn(f)
        .map(|_| ())
}

fn serve_udp<C: Connect>(shared: &Arc<Shared<C>>, udp: &Arc<UdpSocket>) {
    // One byte more than allowed: a datagram that fills it was too long (the rest is
    // discarded by the kernel).
    let mut buf = vec![0u8; MAX_UDP_QUERY + 1];
    loop {
        let (n, peer) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared
                    .warn
                    .warn(Warn::Socket, format_args!("UDP receive: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if n > MAX_UDP_QUERY {
            shared.warn.warn(
                Warn::Oversize,
                format_args!("dropped a UDP query from {peer} over {MAX_UDP_QUERY} bytes"),
            );
            continue;
        }
        if n < DNS_HEADER {
            shared.warn.warn(
                Warn::Malformed,
                format_args!("dropped a {n}-byte UDP datagram from {peer}"),
            );
            continue;
        }
        let Some(slot) = try_slot(shared) else {
            shared.warn.warn(
                Warn::Busy,
                format_args!(
                    "dropped a UDP query from {peer}: {} queries in flight",
                    shared.limits.max_in_flight
                ),
            );
            continue;
        };
        let query = buf[..n].to_vec();
        let udp = udp.clone();
        let spawned = spawn_worker(move || {
            let shared = &slot.0;
            match exchange(&shared.connector, &query, shared.limits.query_timeout) {
                Ok(answer) if answer.len() > MAX_UDP_ANSWER => {
                    shared.warn.warn(
                        Warn::Host,
                        format_args!("a {}-byte answer does not fit a datagram", answer.len()),
                    );
                }
                Ok(answer) => {
                    if let Err(e) = udp.send_to(&answer, peer) {
                        shared
                            .warn
                            .warn(Warn::Client, format_args!("UDP answer to {peer}: {e}"));
                    }
                }
                Err(e) => {
                    shared
                        .warn
                        .warn(Warn::Host, format_args!("relaying a UDP query: {e}"));
                }
            }
        });
        if let Err(e) = spawned {
            shared.warn.warn(
                Warn::Socket,
                format_args!("cannot start a query thread: {e}"),
            );
        }
    }
}

fn serve_tcp<C: Connect>(shared: &Arc<Shared<C>>, listener: &TcpListener) {
    loop {
        let (client, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared
                    .warn
                    .warn(Warn::Socket, format_args!("TCP accept: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(slot) = try_slot(shared) else {
            shared.warn.warn(
                Warn::Busy,
                format_args!(
                    "closed a TCP connection from {peer}: {} queries in flight",
                    shared.limits.max_in_flight
                ),
            );
            continue;
        };
        let spawned = spawn_worker(move || {
            let shared = &slot.0;
            if let Err((kind, e)) = serve_tcp_client(shared, client) {
                shared
                    .warn
                    .warn(kind, format_args!("TCP client {peer}: {e}"));
            }
        });
        if let Err(e) = spawned {
            shared.warn.warn(
                Warn::Socket,
                format_args!("cannot start a query thread: {e}"),
            );
        }
    }
}

/// Relays the framed queries of one TCP client in order until it closes, idles or
/// misbehaves.
fn serve_tcp_client<C: Connect>(
    shared: &Shared<C>,
    mut client: TcpStream,
) -> Result<(), (Warn, io::Error)> {
    loop {
        let query = {
            let mut d = Deadline::new(&mut client, shared.limits.idle_timeout);
            match read_framed(&mut d) {
                Ok(Some(q)) => q,
                Ok(None) => return Ok(()),
                // An idle client is closed without a warning: that is normal.
                Err(e) if is_timeout(&e) => return Ok(()),
                Err(e) => return Err((Warn::Client, e)),
            }
        };
        if query.len() < DNS_HEADER {
            return Err((
                Warn::Malformed,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a {}-byte message is not a query", query.len()),
                ),
            ));
        }
        let answer = exchange(&shared.connector, &query, shared.limits.query_timeout)
            .map_err(|e| (Warn::Host, e))?;
        let mut d = Deadline::new(&mut client, shared.limits.query_timeout);
        write_framed(&mut d, &answer).map_err(|e| (Warn::Client, e))?;
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One query to the host and its answer, on a stream of their own, within `limit`.
fn exchange<C: Connect>(connector: &C, query: &[u8], limit: Duration) -> io::Result<Vec<u8>> {
    let mut stream = connector.connect()?;
    let mut d = Deadline::new(&mut stream, limit);
    write_framed(&mut d, query)?;
    read_framed(&mut d)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the host closed the stream without an answer",
        )
    })
}

/// Writes `msg` with its 2-byte big-endian length (at most 65535 bytes).
fn write_framed(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {}-byte DNS message cannot be framed", msg.len()),
        )
    })?;
    let mut frame = Vec::with_capacity(2 + msg.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(msg);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one framed message; `None` at a clean EOF before its first byte. A zero
/// length is an error (no DNS message is empty).
fn read_framed(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a zero-length DNS message",
        ));
    }
    let mut msg = vec![0u8; len];
    r.read_exact(&mut msg)?;
    Ok(Some(msg))
}

#[cfg(test)]
mod tests;
