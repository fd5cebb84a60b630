//! The muxer: routes guest packets to connections, host streams to guest packets, and owns
//! every Unix socket of the device.
//!
//! All sockets sit in one nested epoll whose fd is the only thing the VMM's event loop
//! watches for this device ([`Muxer::process_host_events`] when it is ready). Packets for
//! the guest wait in two bounded queues: RSTs for packets that match no connection (at most
//! [`MAX_RSTS`], excess dropped: the guest times out instead), and connections with
//! something to send (each at most once, served round robin).

use super::connection::{Connection, ResetCause, State};
use super::packet::{Hdr, Op};
use super::uds::{self, Listener};
use super::{HOST_CID, MAX_CONNECTIONS, TYPE_STREAM};
use crate::ratelimit::LogLimiter;
use runv_hvsock::handshake::{Handshake, Progress};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

/// RSTs for unknown connections waiting for RX buffers.
pub const MAX_RSTS: usize = 256;
/// Host clients that have not sent their CONNECT line yet.
pub const MAX_HANDSHAKES: usize = 64;
/// First port handed to host-initiated connections (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Events taken per call of [`Muxer::process_host_events`].
const EVENT_BATCH: usize = 64;

/// A connection: (host-side port, guest-side port).
pub type ConnKey = (u32, u32);

/// Errors setting up the muxer, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the hybrid-vsock socket.
    #[error("binding the vsock socket {path}: {source}")]
    Bind {
        /// The `uds=` path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Creating or using the muxer's epoll or timer.
    #[error("vsock muxer {what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Entry {
    conn: Connection,
    watched: Option<EventSet>,
    queued: bool,
}

/// Connections, host clients and packets waiting for the guest.
pub struct Muxer {
    guest_cid: u64,
    listener: Listener,
    epoll: Epoll,
    timer: TimerFd,
    timer_at: Option<Instant>,
    conns: HashMap<ConnKey, Entry>,
    by_fd: HashMap<RawFd, ConnKey>,
    handshakes: HashMap<RawFd, Handshake>,
    rxq: VecDeque<ConnKey>,
    rsts: VecDeque<Hdr>,
    next_port: u32,
    limiter: LogLimiter,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("guest_cid", &self.guest_cid)
            .field("uds", &self.listener.path())
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl AsRawFd for Muxer {
    /// The nested epoll: readable when a socket or timer of the muxer needs attention.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys { what, source }
}

impl Muxer {
    /// Listens on `uds` for host clients of a guest with `guest_cid`.
    pub fn new(guest_cid: u64, uds: &Path) -> Result<Self, Error> {
        let listener = Listener::bind(uds).map_err(|source| Error::Bind {
            path: uds.to_path_buf(),
            source,
        })?;
        let epoll = Epoll::new().map_err(sys("creating its epoll"))?;
        let timer = TimerFd::new()
            .map_err(|e| sys("creating its timer")(std::io::Error::from_raw_os_error(e.errno())))?;
        for fd in [listener.as_raw_fd(), timer.as_raw_fd()] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, fd as u64),
                )
                .map_err(sys("watching its listener and timer"))?;
        }
        Ok(Muxer {
            guest_cid,
            listener,
            epoll,
            timer,
            timer_at: None,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            handshakes: HashMap::new(),
            rxq: VecDeque::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            limiter: LogLimiter::new(),
        })
    }

    /// The hybrid-vsock socket path.
    pub fn uds_path(&self) -> &Path {
        self.listener.path()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Guest bytes held for host streams, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(|e| e.conn.buffered()).sum()
    }

    /// The state of connection `key`, if it exists.
    pub fn connection_state(&self, key: ConnKey) -> Option<State> {
        self.conns.get(&key).map(|e| e.conn.state())
    }

    /// Whether packets wait for the guest.
    pub fn has_pending_rx(&self) -> bool {
        !self.rsts.is_empty() || !self.rxq.is_empty()
    }

    /// Handles the sockets and timer that are ready; call when the muxer's fd is readable.
    pub fn process_host_events(&mut self) -> Result<(), Error> {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(sys("waiting on its epoll")(e)),
        };
        let now = Instant::now();
        for ev in &events[..n] {
            let fd = ev.data() as RawFd;
            if fd == self.listener.as_raw_fd() {
                self.accept_clients(now);
            } else if fd == self.timer.as_raw_fd() {
                self.on_timer(now);
            } else if self.handshakes.contains_key(&fd) {
                self.on_handshake(fd);
            } else if let Some(&key) = self.by_fd.get(&fd) {
                if let Some(e) = self.conns.get_mut(&key) {
                    e.conn.notify(ev.event_set(), now);
                }
                self.sync(key);
            }
        }
        Ok(())
    }

    fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        if self.limiter.allow() {
            tracing::warn!("vsock {}: {msg}", self.listener.path().display());
        }
    }

    fn watch(&self, fd: RawFd, op: ControlOperation, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(op, fd, EpollEvent::new(events, fd as u64))
    }

    fn unwatch(&self, fd: RawFd) {
        // Only fails if fd is not watched, which the callers rule out.
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    fn accept_clients(&mut self, now: Instant) {
        for _ in 0..EVENT_BATCH {
            let stream = match self.listener.accept() {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(e) => return self.warn(format_args!("accepting a host client: {e}")),
            };
            if self.handshakes.len() >= MAX_HANDSHAKES || self.conns.len() >= MAX_CONNECTIONS {
                // Closing it tells the client; keeping it would spin the epoll.
                self.warn(format_args!(
                    "host client refused: {} connections and {} pending clients already",
                    self.conns.len(),
                    self.handshakes.len()
                ));
                continue;
            }
            let fd = stream.as_raw_fd();
            if let Err(e) = self.watch(fd, ControlOperation::Add, EventSet::IN) {
                self.warn(format_args!("watching a host client: {e}"));
                continue;
            }
            let h = Handshake::new(stream, now);
            self.arm(h.deadline(), now);
            self.handshakes.insert(fd, h);
        }
    }

    fn on_handshake(&mut self, fd: RawFd) {
        let Some(h) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let port = match h.on_readable() {
            Ok(Progress::Pending) => return,
            Ok(Progress::Connect(port)) => Some(port),
            Err(e) => {
                self.warn(format_args!("host client dropped: {e}"));
                None
            }
        };
        self.unwatch(fd);
        let Some(h) = self.handshakes.remove(&fd) else {
            return;
        };
        let Some(peer_port) = port else { return };
        if self.conns.len() >= MAX_CONNECTIONS {
            return self.warn(format_args!(
                "host CONNECT {peer_port} refused: {MAX_CONNECTIONS} connections open"
            ));
        }
        let local_port = self.alloc_port();
        let conn = Connection::new_local(h.into_stream(), self.guest_cid, local_port, peer_port);
        self.insert(conn);
    }

    fn alloc_port(&mut self) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            // At most MAX_CONNECTIONS ports are taken, so this ends quickly.
            if !self.conns.keys().any(|k| k.0 == p) {
                return p;
            }
        }
    }

    fn insert(&mut self, conn: Connection) {
        let key = (conn.local_port(), conn.peer_port());
        let fd = conn.stream().as_raw_fd();
        self.by_fd.insert(fd, key);
        self.conns.insert(
            key,
            Entry {
                conn,
                watched: None,
                queued: false,
            },
        );
        self.sync(key);
    }

    /// Brings the epoll, the RX queue and the timer in line with a connection's state, and
    /// drops it once it is done.
    fn sync(&mut self, key: ConnKey) {
        let now = Instant::now();
        let Some(e) = self.conns.get_mut(&key) else {
            return;
        };
        let cause = e.conn.take_reset_cause();
        let fd = e.conn.stream().as_raw_fd();
        let want = if e.conn.is_done() {
            None
        } else {
            e.conn.interest()
        };
        let mut failed = None;
        if want != e.watched {
            let r = match (e.watched, want) {
                (None, Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, fd as u64))
                }
                (Some(_), Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, fd as u64))
                }
                _ => self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default()),
            };
            match r {
                Ok(()) => e.watched = want,
                Err(err) => {
                    failed = Some(err);
                    e.conn.reset(ResetCause::HostIo);
                    e.conn.take_reset_cause();
                    if e.watched.is_some() {
                        // Best effort: stop watching an fd we are giving up on.
                        let _ = self
                            .epoll
                            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                        e.watched = None;
                    }
                }
            }
        }
        let done = e.conn.is_done();
        if !done && e.conn.has_pending_rx() && !e.queued {
            e.queued = true;
            self.rxq.push_back(key);
        }
        let deadline = e.conn.deadline();
        if done {
            if e.queued {
                // No stale entries: a guest that withholds RX buffers while it opens and
                // resets connections must not grow the queue.
                self.rxq.retain(|k| *k != key);
            }
            self.conns.remove(&key);
            self.by_fd.remove(&fd);
        }
        if let Some(d) = deadline {
            self.arm(d, now);
        }
        if let Some(c) = cause {
            self.warn(format_args!("connection {key:?} reset: {c:?}"));
        }
        if let Some(err) = failed {
            self.warn(format_args!("connection {key:?}: epoll_ctl: {err}"));
        }
    }

    fn arm(&mut self, deadline: Instant, now: Instant) {
        if self.timer_at.is_some_and(|t| t <= deadline) {
            return;
        }
        // A zero duration would disarm the timer.
        let d = deadline
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        match self.timer.reset(d, None) {
            Ok(()) => self.timer_at = Some(deadline),
            Err(e) => self.warn(format_args!("arming the timeout timer: {e}")),
        }
    }

    fn on_timer(&mut self, now: Instant) {
        // Re-arming (or clearing) also resets the timer's readable state.
        self.timer_at = None;
        if let Err(e) = self.timer.clear() {
            self.warn(format_args!("clearing the timeout timer: {e}"));
        }
        let expired: Vec<RawFd> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline() <= now)
            .map(|(&fd, _)| fd)
            .collect();
        for fd in expired {
            self.unwatch(fd);
            self.handshakes.remove(&fd);
            self.warn(format_args!("host client dropped: no CONNECT line in time"));
        }
        let due: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.deadline().is_some_and(|d| d <= now))
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            if let Some(e) = self.conns.get_mut(&key) {
                e.conn.on_timeout(now);
            }
            self.sync(key);
        }
        let next = self
            .handshakes
            .values()
            .map(|h| h.deadline())
            .chain(self.conns.values().filter_map(|e| e.conn.deadline()))
            .min();
        if let Some(d) = next {
            self.arm(d, now);
        }
    }

    /// Queues a RST answering `hdr` (a packet that matches no connection).
    fn push_rst(&mut self, hdr: &Hdr) {
        if hdr.op() == Some(Op::Rst) {
            return;
        }
        if self.rsts.len() >= MAX_RSTS {
            return self.warn(format_args!(
                "RST for guest port {} dropped: {MAX_RSTS} RSTs already wait for RX buffers",
                hdr.src_port
            ));
        }
        self.rsts.push_back(Hdr {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: hdr.dst_port,
            dst_port: hdr.src_port,
            type_: TYPE_STREAM,
            op: Op::Rst as u16,
            ..Hdr::default()
        });
    }

    /// Handles one packet from the guest's TX queue.
    pub fn send_pkt<B: BitmapSlice>(&mut self, hdr: &Hdr, data: Option<&VolatileSlice<'_, B>>) {
        if hdr.src_cid != self.guest_cid {
            let cid = self.guest_cid;
            return self.warn(format_args!(
                "packet dropped: source CID {} is not the guest's ({cid})",
                hdr.src_cid
            ));
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            return self.push_rst(hdr);
        }
        let key = (hdr.dst_port, hdr.src_port);
        if let Some(e) = self.conns.get_mut(&key) {
            e.conn.send_pkt(hdr, data, Instant::now());
            return self.sync(key);
        }
        match hdr.op() {
            Some(Op::Request) => self.guest_connect(hdr),
            Some(Op::Rst) => {}
            _ => self.push_rst(hdr),
        }
    }

    fn guest_connect(&mut self, hdr: &Hdr) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.warn(format_args!(
                "guest connect to port {} refused: {MAX_CONNECTIONS} connections open",
                hdr.dst_port
            ));
            return self.push_rst(hdr);
        }
        let path = uds::port_path(self.listener.path(), hdr.dst_port);
        match uds::connect_nonblocking(&path) {
            Ok(stream) => self.insert(Connection::new_peer(stream, self.guest_cid, hdr)),
            Err(e) => {
                if self.limiter.allow() {
                    tracing::debug!("vsock: guest connect to {}: {e}", path.display());
                }
                self.push_rst(hdr);
            }
        }
    }

    /// The next packet for the guest: its header, its payload written into `buf`. `None`
    /// when nothing is ready.
    pub fn recv_pkt<B: BitmapSlice>(&mut self, buf: &VolatileSlice<'_, B>) -> Option<Hdr> {
        if let Some(h) = self.rsts.pop_front() {
            return Some(h);
        }
        let now = Instant::now();
        // Bounded: a connection that yields nothing is not queued again.
        for _ in 0..self.rxq.len() {
            let key = self.rxq.pop_front()?;
            let Some(e) = self.conns.get_mut(&key) else {
                continue;
            };
            e.queued = false;
            let pkt = e.conn.recv_pkt(buf, now);
            self.sync(key);
            if pkt.is_some() {
                return pkt;
            }
        }
        None
    }

    /// Device reset: every connection and pending client is dropped (the host sees EOF);
    /// the listener stays.
    pub fn reset(&mut self) {
        for (fd, _) in self.handshakes.drain() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        for (_, e) in self.conns.drain() {
            if e.watched.is_some() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    e.conn.stream().as_raw_fd(),
                    EpollEvent::default(),
                );
            }
        }
        self.by_fd.clear();
        self.rxq.clear();
        self.rsts.clear();
    }
}

#[cfg(test)]
#[path = "muxer_tests.rs"]
mod tests;
