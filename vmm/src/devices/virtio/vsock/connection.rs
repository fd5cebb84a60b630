//! One vsock stream between the guest and a host Unix stream: its state machine and its
//! credit accounting (virtio spec 5.10.6.3).
//!
//! ```text
//!  host CONNECT ──> LocalInit ──RESPONSE──┐          guest REQUEST (host listener found)
//!      (REQUEST queued)  │                v                  │ (RESPONSE queued)
//!                        │           Established <───────────┘
//!                   RST/timeout           │ host gone, or both directions shut down:
//!                        │                v SHUTDOWN(RCV|SEND) sent
//!                        │             Closing ──guest RST or timeout──┐
//!                        v                                            v
//!                      Dead  <──── guest RST, guest close after flush, errors
//! ```
//!
//! Guest to host: the guest may have at most [`CONN_BUF_SIZE`] bytes in flight (sent but
//! not yet written to the Unix stream); what the stream does not take at once waits in
//! `tx_buf`, which therefore never exceeds that size. A guest that sends beyond its credit
//! gets a RST. `fwd_cnt` counts the bytes written to the stream and reaches the guest in
//! every packet, and in a credit update once [`CREDIT_UPDATE_THRESHOLD`] bytes went
//! unannounced. A host that does not read thus stalls the guest sender.
//!
//! Host to guest: bytes are read from the Unix stream straight into a guest RX buffer, no
//! more than the guest's free credit (`buf_alloc - (rx_cnt - fwd_cnt)` of its last packet).
//! Without credit the stream is not read (and not polled), so a slow guest stalls the host.

use super::packet::{Hdr, Op};
use super::{
    CONN_BUF_SIZE, CREDIT_UPDATE_THRESHOLD, HOST_CID, MAX_PKT_DATA, SHUTDOWN_RCV, SHUTDOWN_SEND,
    TYPE_STREAM,
};
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileSlice, WriteVolatile};
use vmm_sys_util::epoll::EventSet;

/// How long the guest has to answer a host-initiated REQUEST.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to answer our SHUTDOWN(RCV|SEND) with a RST.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the guest closed, how long a host stream may go without reading what is left for
/// it before the rest is dropped.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated, waiting for the guest's RESPONSE.
    LocalInit,
    /// Data flows (possibly half-closed).
    Established,
    /// SHUTDOWN(RCV|SEND) sent; waiting for the guest's RST.
    Closing,
    /// Finished; removed once a pending RST went out.
    Dead,
}

/// Packets waiting to go to the guest (bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending(u8);

impl Pending {
    const REQUEST: u8 = 1;
    const RESPONSE: u8 = 2;
    const RW: u8 = 4;
    const SHUTDOWN: u8 = 8;
    const CREDIT_UPDATE: u8 = 16;
    const CREDIT_REQUEST: u8 = 32;
    const RST: u8 = 64;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    fn set(&mut self, bit: u8) {
        self.0 |= bit;
    }
    fn take(&mut self, bit: u8) -> bool {
        let had = self.has(bit);
        self.0 &= !bit;
        had
    }
}

/// Guest data the host stream did not take yet; at most [`CONN_BUF_SIZE`] bytes.
#[derive(Debug, Default)]
struct TxBuf {
    data: Vec<u8>,
    start: usize,
}

impl TxBuf {
    fn len(&self) -> usize {
        self.data.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `src`; the caller checked the credit limit.
    fn push<B: BitmapSlice>(&mut self, src: &VolatileSlice<'_, B>) {
        if self.start > 0 && self.data.len() + src.len() > self.data.capacity() {
            self.data.drain(..self.start);
            self.start = 0;
        }
        let old = self.data.len();
        self.data.resize(old + src.len(), 0);
        src.copy_to(&mut self.data[old..]);
    }

    /// Writes as much as `out` takes; returns the bytes written.
    fn flush_to(&mut self, out: &mut impl Write) -> std::io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            match out.write(&self.data[self.start..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() {
            // Give memory back: a stalled connection may have grown the buffer to its cap.
            if self.data.capacity() > MAX_PKT_DATA as usize {
                self.data = Vec::new();
            } else {
                self.data.clear();
            }
            self.start = 0;
        }
        Ok(total)
    }
}

/// Why a connection was reset (for the rate-limited log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// The guest sent more than its credit allowed.
    CreditExceeded,
    /// A packet that makes no sense in the connection's state.
    Protocol(u16),
    /// Reading or writing the host stream failed.
    HostIo,
    /// A timeout ran out.
    Timeout,
}

/// One stream. The muxer owns it, feeds it guest packets and host readiness, and asks it
/// for packets to give the guest.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    state: State,
    pending: Pending,
    /// SHUTDOWN flags to send with the pending SHUTDOWN.
    shutdown_flags: u32,
    /// `OK <port>\n` for the host, written before any guest data.
    ack: Vec<u8>,
    tx_buf: TxBuf,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    credit_requested: bool,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
    local_eof: bool,
    host_write_shut: bool,
    /// The host closed both directions (EPOLLHUP): the stream is no longer polled and is
    /// read until EOF whenever credit allows.
    host_hup: bool,
    deadline: Option<Instant>,
    last_reset: Option<ResetCause>,
}

impl Connection {
    fn new(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        Connection {
            stream,
            guest_cid,
            local_port,
            peer_port,
            state: State::Established,
            pending: Pending::default(),
            shutdown_flags: 0,
            ack: Vec::new(),
            tx_buf: TxBuf::default(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            credit_requested: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
            local_eof: false,
            host_write_shut: false,
            host_hup: false,
            deadline: None,
            last_reset: None,
        }
    }

    /// A host-initiated connection to guest port `peer_port`; a REQUEST is pending.
    pub fn new_local(stream: UnixStream, guest_cid: u64, local_port: u32, peer_port: u32) -> Self {
        let mut c = Self::new(stream, guest_cid, local_port, peer_port);
        c.state = State::LocalInit;
        c.pending.set(Pending::REQUEST);
        c
    }

    /// A guest-initiated connection whose host listener accepted; a RESPONSE is pending.
    pub fn new_peer(stream: UnixStream, guest_cid: u64, request: &Hdr) -> Self {
        let mut c = Self::new(stream, guest_cid, request.dst_port, request.src_port);
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        c.pending.set(Pending::RESPONSE);
        c
    }

    /// The host stream.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The host-side port.
    pub fn local_port(&self) -> u32 {
        self.local_port
    }

    /// The guest-side port.
    pub fn peer_port(&self) -> u32 {
        self.peer_port
    }

    /// When [`Connection::on_timeout`] is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Why the connection was last reset, if it was (taken).
    pub fn take_reset_cause(&mut self) -> Option<ResetCause> {
        self.last_reset.take()
    }

    /// Bytes of guest data held for the host stream.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Whether a packet is ready for the guest.
    pub fn has_pending_rx(&self) -> bool {
        self.pending.0 != 0
    }

    /// Finished and nothing left to tell the guest: the muxer may drop it.
    pub fn is_done(&self) -> bool {
        self.state == State::Dead && !self.has_pending_rx()
    }

    /// Credit the guest granted and we have not used.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn may_read_host(&self) -> bool {
        self.state == State::Established && !self.local_eof && !self.peer_shut_rcv
    }

    /// Events to poll the host stream for; `None`: do not poll it at all.
    pub fn interest(&self) -> Option<EventSet> {
        if self.state == State::Dead || self.host_hup {
            return None;
        }
        let mut ev = EventSet::empty();
        if self.may_read_host() && !self.pending.has(Pending::RW) && self.peer_credit() > 0 {
            ev |= EventSet::IN;
        }
        if !self.ack.is_empty() || !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        Some(ev)
    }

    /// The host stream is ready (`events` from epoll).
    pub fn notify(&mut self, events: EventSet, now: Instant) {
        if events.contains(EventSet::OUT) {
            self.flush_host(now);
        }
        if events.intersects(EventSet::HANG_UP | EventSet::ERROR) && self.state != State::Dead {
            // The host closed both directions. Read what it wrote before closing; the
            // stream is no longer polled, so that read is driven by guest credit.
            self.host_hup = true;
            if self.state == State::LocalInit && self.pending.has(Pending::REQUEST) {
                // The guest never heard of it.
                self.pending = Pending::default();
                self.state = State::Dead;
                return;
            }
        }
        if (events.contains(EventSet::IN) || self.host_hup) && self.may_read_host() {
            self.pending.set(Pending::RW);
        }
        if self.host_hup && self.state == State::Established && !self.may_read_host() {
            self.start_closing(now);
        }
    }

    /// Handles a packet the guest sent on this connection.
    pub fn send_pkt<B: BitmapSlice>(
        &mut self,
        hdr: &Hdr,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
            if self.host_hup && self.may_read_host() {
                self.pending.set(Pending::RW);
            }
        }
        match (hdr.op(), self.state) {
            (_, State::Dead) => {}
            (Some(Op::Rst), _) => {
                self.pending = Pending::default();
                self.state = State::Dead;
            }
            (_, State::Closing) => {}
            (Some(Op::Response), State::LocalInit) => {
                self.state = State::Established;
                self.deadline = None;
                self.ack = runv_hvsock::handshake::ok_line(self.local_port).into_bytes();
                self.flush_host(now);
                if self.host_hup {
                    self.pending.set(Pending::RW);
                }
            }
            (_, State::LocalInit) => self.reset(ResetCause::Protocol(hdr.op)),
            (Some(Op::Rw), _) => self.recv_guest_data(hdr, data, now),
            (Some(Op::Shutdown), _) => {
                self.peer_shut_rcv |= hdr.flags & SHUTDOWN_RCV != 0;
                self.peer_shut_send |= hdr.flags & SHUTDOWN_SEND != 0;
                if self.peer_shut_rcv {
                    self.pending.take(Pending::RW);
                }
                self.after_flush(now);
            }
            (Some(Op::CreditUpdate), _) => {}
            (Some(Op::CreditRequest), _) => self.pending.set(Pending::CREDIT_UPDATE),
            (Some(Op::Request | Op::Response) | None, _) => {
                self.reset(ResetCause::Protocol(hdr.op))
            }
        }
    }

    fn recv_guest_data<B: BitmapSlice>(
        &mut self,
        hdr: &Hdr,
        data: Option<&VolatileSlice<'_, B>>,
        now: Instant,
    ) {
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            return;
        };
        if self.peer_shut_send {
            return self.reset(ResetCause::Protocol(hdr.op));
        }
        if self.tx_buf.len() + data.len() > CONN_BUF_SIZE as usize {
            return self.reset(ResetCause::CreditExceeded);
        }
        let mut written = 0;
        if self.ack.is_empty() && self.tx_buf.is_empty() {
            match (&self.stream).write_volatile(data) {
                Ok(n) => written = n,
                Err(vm_memory::VolatileMemoryError::IOError(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return self.reset(ResetCause::HostIo),
            }
        }
        if written < data.len() {
            match data.offset(written) {
                Ok(rest) => self.tx_buf.push(&rest),
                Err(_) => return self.reset(ResetCause::HostIo),
            }
        }
        self.forwarded(written, now);
    }

    /// Accounts `n` guest bytes written to the host stream.
    fn forwarded(&mut self, n: usize, now: Instant) {
        self.fwd_cnt += Wrapping(n as u32);
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending.set(Pending::CREDIT_UPDATE);
        }
        if n > 0 && self.peer_shut_send && self.peer_shut_rcv {
            self.deadline = Some(now + FLUSH_TIMEOUT);
        }
    }

    /// Writes the ack and buffered guest data to the host stream.
    fn flush_host(&mut self, now: Instant) {
        if self.state == State::Dead {
            return;
        }
        while !self.ack.is_empty() {
            match self.stream.write(&self.ack) {
                Ok(n) => {
                    self.ack.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => return self.reset(ResetCause::HostIo),
            }
        }
        match self.tx_buf.flush_to(&mut self.stream) {
            Ok(n) => self.forwarded(n, now),
            Err(_) => return self.reset(ResetCause::HostIo),
        }
        self.after_flush(now);
    }

    /// Acts on shutdowns once the guest's data reached the host.
    fn after_flush(&mut self, now: Instant) {
        if self.state != State::Established || !self.tx_buf.is_empty() || !self.ack.is_empty() {
            if self.peer_shut_send && self.peer_shut_rcv && self.deadline.is_none() {
                self.deadline = Some(now + FLUSH_TIMEOUT);
            }
            return;
        }
        if self.peer_shut_send && self.peer_shut_rcv {
            // The guest closed and everything it sent was delivered: confirm with RST.
            self.shut_host_write();
            self.pending = Pending::default();
            self.pending.set(Pending::RST);
            self.deadline = None;
            return;
        }
        if self.peer_shut_send {
            self.shut_host_write();
            if self.local_eof || self.host_hup {
                self.start_closing(now);
            }
        }
    }

    fn shut_host_write(&mut self) {
        if !self.host_write_shut {
            self.host_write_shut = true;
            // The host may have closed already; nothing to do about that here.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Both directions are finished on the host side: SHUTDOWN(RCV|SEND), wait for RST.
    fn start_closing(&mut self, now: Instant) {
        self.state = State::Closing;
        self.pending.take(Pending::RW);
        self.pending.set(Pending::SHUTDOWN);
        self.shutdown_flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        self.deadline = Some(now + CLOSE_TIMEOUT);
    }

    /// Tears the connection down with a RST to the guest.
    pub fn reset(&mut self, cause: ResetCause) {
        self.last_reset = Some(cause);
        let guest_knows = !(self.state == State::LocalInit && self.pending.has(Pending::REQUEST));
        self.pending = Pending::default();
        if guest_knows && self.state != State::Dead {
            self.pending.set(Pending::RST);
        }
        self.state = State::Dead;
        self.deadline = None;
    }

    /// A deadline passed.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.reset(ResetCause::Timeout);
        }
    }

    fn hdr(&mut self, op: Op, len: u32, flags: u32) -> Hdr {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.pending.take(Pending::CREDIT_UPDATE);
        Hdr {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, its payload (if any) written to `buf`. `None` when
    /// nothing is pending (or reading the host found nothing after all).
    pub fn recv_pkt<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<'_, B>,
        now: Instant,
    ) -> Option<Hdr> {
        if self.pending.take(Pending::RST) {
            self.pending = Pending::default();
            self.state = State::Dead;
            return Some(self.hdr(Op::Rst, 0, 0));
        }
        if self.pending.take(Pending::REQUEST) {
            self.deadline = Some(now + REQUEST_TIMEOUT);
            return Some(self.hdr(Op::Request, 0, 0));
        }
        if self.pending.take(Pending::RESPONSE) {
            return Some(self.hdr(Op::Response, 0, 0));
        }
        if self.pending.take(Pending::RW) {
            if let Some(hdr) = self.read_host(buf, now) {
                return Some(hdr);
            }
            if self.pending.take(Pending::RST) {
                self.state = State::Dead;
                return Some(self.hdr(Op::Rst, 0, 0));
            }
        }
        if self.pending.take(Pending::SHUTDOWN) {
            let flags = self.shutdown_flags;
            return Some(self.hdr(Op::Shutdown, 0, flags));
        }
        if self.pending.take(Pending::CREDIT_UPDATE) {
            return Some(self.hdr(Op::CreditUpdate, 0, 0));
        }
        if self.pending.take(Pending::CREDIT_REQUEST) {
            return Some(self.hdr(Op::CreditRequest, 0, 0));
        }
        None
    }

    /// Reads host bytes into `buf`, within the guest's credit.
    fn read_host<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<'_, B>,
        now: Instant,
    ) -> Option<Hdr> {
        if !self.may_read_host() {
            return None;
        }
        let credit = self.peer_credit();
        if credit == 0 {
            if !self.credit_requested {
                self.credit_requested = true;
                self.pending.set(Pending::CREDIT_REQUEST);
            }
            return None;
        }
        let want = (credit.min(MAX_PKT_DATA) as usize).min(buf.len());
        let Ok(mut dst) = buf.subslice(0, want) else {
            return None;
        };
        match (&self.stream).read_volatile(&mut dst) {
            Ok(0) => {
                self.local_eof = true;
                if self.host_hup || (self.peer_shut_send && self.tx_buf.is_empty()) {
                    self.start_closing(now);
                } else {
                    self.pending.set(Pending::SHUTDOWN);
                    self.shutdown_flags = SHUTDOWN_SEND;
                }
                None
            }
            Ok(n) => {
                self.rx_cnt += Wrapping(n as u32);
                // More may be waiting: try again with the next buffer rather than waiting
                // for epoll (a stream that is not polled any more relies on this).
                self.pending.set(Pending::RW);
                Some(self.hdr(Op::Rw, n as u32, 0))
            }
            Err(vm_memory::VolatileMemoryError::IOError(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
            {
                None
            }
            Err(_) => {
                self.reset(ResetCause::HostIo);
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
