//! virtio-net queue processing (virtio 1.2, 5.1.6), transport-agnostic: the rx and tx
//! queues against a [`FrameFd`] (a tap, or a SEQPACKET socket in tests), on the VMM's
//! event loop.
//!
//! # rx (frames to the guest)
//! The handler takes a driver buffer (a write-only chain, checked and kept "parked")
//! before it reads a frame from the tap into its one bounce buffer, so it holds at most
//! one frame it could not deliver yet. The frame goes into one chain, or with
//! VIRTIO_NET_F_MRG_RXBUF into as many chains as it needs (`num_buffers` in the header
//! says how many). When the ring has no (or not enough) buffers, the handler stops
//! watching the tap for readability and asks the driver for a notification; the rx
//! queue's notification resumes it. Frames wait in the tap's own queue meanwhile (the
//! kernel drops there when it is full): no busy loop, no buffering in the VMM.
//!
//! # tx (frames from the guest)
//! On a notification each chain (header + frame, device-readable) goes to the tap with
//! one `writev` straight from guest memory. If the tap answers EAGAIN the chain is put
//! back, the handler stops reading the tx queue and watches the tap for writability
//! (EPOLLOUT) instead; the guest's ring fills up and its driver stops the queue.
//!
//! # Guest input
//! A malformed chain (a write-only descriptor in tx, a read-only one in rx, a buffer
//! outside guest RAM, a loop, fewer than 12 bytes, a tx frame above [`MAX_PACKET_LEN`])
//! is returned used with length 0 and counted; a frame larger than the rx buffers the
//! driver can post is dropped and counted. Only a corrupt ring (an avail index more than
//! a queue ahead, a used ring that cannot be written) or a dead tap stops the device
//! (DEVICE_NEEDS_RESET). Log lines a guest can cause are rate-limited.
//!
//! Work per wake-up is bounded ([`RX_BUDGET`] frames, [`TX_BUDGET`] chains) so one busy
//! device cannot starve the others on the shared event loop.

use super::tap::FrameFd;
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::devices::virtio::common::{add_used_in_range, next_chain, signal_used_queue};
use crate::devices::virtio::{GuestMemoryMmap, Interrupt, Queue, QueueT};
use crate::event_loop::{Event, EventHandler, EventOps, EventSet, HandlerError};
use crate::ratelimit::LogLimiter;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use vmm_sys_util::eventfd::EventFd;

/// Queue indexes (virtio 1.2, 5.1.2): receiveq1, transmitq1.
pub const RX_QUEUE: usize = 0;
/// Guest to host.
pub const TX_QUEUE: usize = 1;
/// Most frames delivered per wake-up; the tap stays watched, so the loop comes back.
pub const RX_BUDGET: usize = 64;
/// Most tx chains sent per wake-up; the handler then re-signals its own tx eventfd.
pub const TX_BUDGET: usize = 256;
/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Errors that stop the device (the guest then sees DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ring is corrupt (an avail index more than a queue ahead) or its fields cannot
    /// be accessed.
    #[error("{queue} queue: {source}")]
    Ring {
        /// "rx" or "tx".
        queue: &'static str,
        /// Cause.
        source: virtio_queue::Error,
    },
    /// Reading the tap failed with something other than EAGAIN.
    #[error("reading a frame from the tap: {0}")]
    TapRead(io::Error),
    /// The tap reported an error or hang-up, or end of file.
    #[error("the tap was closed or reported an error")]
    TapGone,
    /// Changing what the event loop watches failed.
    #[error(transparent)]
    EventLoop(#[from] crate::event_loop::Error),
}

fn ring(queue: &'static str) -> impl Fn(virtio_queue::Error) -> Error {
    move |source| Error::Ring { queue, source }
}

/// Why one chain was refused (returned used with length 0).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A tx descriptor the device could write, or an rx one it could only read.
    #[error("descriptor of the wrong direction (expected device-{expected})")]
    Direction {
        /// "readable" or "writable".
        expected: &'static str,
    },
    /// A descriptor outside guest memory.
    #[error("descriptor at {addr:#x}+{len} is outside guest memory")]
    BadAddress {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// No descriptor, a loop, or a next index beyond the table.
    #[error("empty or unterminated chain (loop or bad next index)")]
    Unterminated,
    /// Not even room for the 12-byte header.
    #[error("{0} bytes, fewer than the 12-byte virtio-net header")]
    Short(u64),
    /// A tx chain above the largest frame.
    #[error("{0} bytes, more than the largest frame ({MAX_PACKET_LEN} with its header)")]
    TooLong(u64),
}

/// What the device counted; shared with [`super::Net`] (tests and diagnostics).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Their bytes, without the virtio-net header.
    pub rx_bytes: AtomicU64,
    /// Frames dropped: larger than the buffers the driver can post, or malformed.
    pub rx_dropped: AtomicU64,
    /// rx chains refused.
    pub rx_bad_chains: AtomicU64,
    /// Frames the tap took from the guest.
    pub tx_frames: AtomicU64,
    /// Their bytes, without the virtio-net header.
    pub tx_bytes: AtomicU64,
    /// tx chains refused.
    pub tx_bad_chains: AtomicU64,
    /// Frames the tap refused (EINVAL for a bad header, ...).
    pub tx_errors: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Walks a chain, checking every descriptor's direction and address, and hands each
/// non-empty buffer to `each`. Returns (total bytes, descriptors). A tx chain stops
/// early once above [`MAX_PACKET_LEN`].
fn walk<M>(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<M>,
    device_writes: bool,
    mut each: impl FnMut(GuestAddress, u32),
) -> Result<(u64, usize), ChainError>
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    let (mut total, mut count, mut terminated) = (0u64, 0usize, false);
    for d in chain {
        count += 1;
        terminated = !d.has_next();
        if d.is_write_only() != device_writes {
            return Err(ChainError::Direction {
                expected: if device_writes {
                    "writable"
                } else {
                    "readable"
                },
            });
        }
        if d.len() > 0 {
            if !mem.check_range(d.addr(), d.len() as usize) {
                return Err(ChainError::BadAddress {
                    addr: d.addr().0,
                    len: d.len(),
                });
            }
            each(d.addr(), d.len());
        }
        total += u64::from(d.len());
        if !device_writes && total > MAX_PACKET_LEN as u64 {
            return Err(ChainError::TooLong(total));
        }
    }
    if !terminated {
        return Err(ChainError::Unterminated);
    }
    if total < VNET_HDR_LEN as u64 {
        return Err(ChainError::Short(total));
    }
    Ok((total, count))
}

/// A checked rx chain taken from the ring and not used yet.
#[derive(Debug)]
struct RxChain {
    head: u16,
    segs: Vec<(GuestAddress, u32)>,
    cap: u64,
    descs: usize,
}

/// Receive-side state.
struct Rx {
    /// One frame (header included) read from the tap; one byte more than the largest, to
    /// see a frame that was cut short.
    buf: Box<[u8]>,
    /// Length of the frame in `buf` not delivered yet.
    pending: Option<usize>,
    parked: VecDeque<RxChain>,
    /// Descriptors in `parked`.
    parked_descs: usize,
    /// Waiting for the driver to post buffers: the tap is not watched for IN.
    starved: bool,
    /// Notifications may be on (they are at activation, and after the ring ran dry):
    /// turned off once a buffer is taken, so a driver refilling a ring the device is not
    /// waiting on does not notify.
    notify_on: bool,
}

/// What woke the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The driver notified the rx queue (new buffers).
    RxQueue,
    /// The driver notified the tx queue (new frames).
    TxQueue,
    /// The tap is readable, writable, or reports an error.
    Tap(EventSet),
}

/// The two queues and their notification eventfds.
pub struct NetQueues {
    /// receiveq1.
    pub rx: Queue,
    /// transmitq1.
    pub tx: Queue,
    /// Readable when the driver notifies the rx queue.
    pub rx_evt: EventFd,
    /// Readable when the driver notifies the tx queue.
    pub tx_evt: EventFd,
}

/// The device's work on the event-loop thread.
pub struct NetHandler {
    name: String,
    mem: GuestMemoryMmap,
    q: NetQueues,
    frames: Arc<FrameFd>,
    interrupt: Arc<Interrupt>,
    mrg_rxbuf: bool,
    stats: Arc<NetStats>,
    rx: Rx,
    tx_blocked: bool,
    tx_segs: Vec<(GuestAddress, u32)>,
    /// What the event loop watches on the tap (empty: not registered).
    registered: EventSet,
    log: LogLimiter,
}

impl NetHandler {
    /// A handler over `q`; `mrg_rxbuf` when the driver negotiated VIRTIO_NET_F_MRG_RXBUF.
    /// Register it with [`NetHandler::initial_fds`].
    pub fn new(
        name: String,
        mem: GuestMemoryMmap,
        q: NetQueues,
        frames: Arc<FrameFd>,
        interrupt: Arc<Interrupt>,
        mrg_rxbuf: bool,
        stats: Arc<NetStats>,
    ) -> Self {
        NetHandler {
            name,
            mem,
            q,
            frames,
            interrupt,
            mrg_rxbuf,
            stats,
            rx: Rx {
                buf: vec![0u8; MAX_PACKET_LEN + 1].into_boxed_slice(),
                pending: None,
                parked: VecDeque::new(),
                parked_descs: 0,
                starved: false,
                notify_on: true,
            },
            tx_blocked: false,
            tx_segs: Vec::new(),
            registered: EventSet::IN,
            log: LogLimiter::new(),
        }
    }

    /// The descriptors to register the handler with: both queue eventfds, and the tap
    /// for IN.
    pub fn initial_fds(&self) -> [(RawFd, EventSet); 3] {
        [
            (self.q.rx_evt.as_raw_fd(), EventSet::IN),
            (self.q.tx_evt.as_raw_fd(), EventSet::IN),
            (self.frames.as_raw_fd(), EventSet::IN),
        ]
    }

    /// What the tap should be watched for now: IN unless rx waits for buffers, OUT while
    /// tx waits for the tap.
    pub fn wanted_tap_events(&self) -> EventSet {
        let mut want = EventSet::empty();
        if !self.rx.starved {
            want |= EventSet::IN;
        }
        if self.tx_blocked {
            want |= EventSet::OUT;
        }
        want
    }

    /// Whether tx waits for the tap to become writable.
    pub fn tx_blocked(&self) -> bool {
        self.tx_blocked
    }

    /// Whether rx waits for the driver's buffers.
    pub fn rx_starved(&self) -> bool {
        self.rx.starved
    }

    /// Does the work `wake` calls for, then raises the interrupt if a used ring changed
    /// and the driver wants to know.
    pub fn process(&mut self, wake: Wake) -> Result<(), Error> {
        let (mut rx_used, mut tx_used) = (false, false);
        match wake {
            Wake::RxQueue => {
                // Clear the notification; an empty counter (spurious wake) is fine.
                let _ = self.q.rx_evt.read();
                if self.rx.starved {
                    self.rx.starved = false;
                    rx_used = self.process_rx()?;
                }
            }
            Wake::TxQueue => {
                let _ = self.q.tx_evt.read();
                if !self.tx_blocked {
                    tx_used = self.process_tx()?;
                }
            }
            Wake::Tap(events) => {
                if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    return Err(Error::TapGone);
                }
                if events.contains(EventSet::OUT) && self.tx_blocked {
                    self.tx_blocked = false;
                    tx_used = self.process_tx()?;
                }
                if events.contains(EventSet::IN) && !self.rx.starved {
                    rx_used = self.process_rx()?;
                }
            }
        }
        let mut notify = false;
        if rx_used {
            notify |= self
                .q
                .rx
                .needs_notification(&self.mem)
                .map_err(ring("rx"))?;
        }
        if tx_used {
            notify |= self
                .q
                .tx
                .needs_notification(&self.mem)
                .map_err(ring("tx"))?;
        }
        if notify {
            signal_used_queue(&self.interrupt, &mut self.log, &self.name);
        }
        Ok(())
    }

    /// Delivers frames from the tap while both frames and buffers last (at most
    /// [`RX_BUDGET`]). Returns whether the used ring changed.
    fn process_rx(&mut self) -> Result<bool, Error> {
        let mut used = false;
        for _ in 0..RX_BUDGET {
            if self.rx.pending.is_none() {
                // A buffer first: a frame read without one would have to wait in the VMM.
                if self.rx.parked.is_empty() && !self.park_rx_chain(&mut used)? {
                    self.rx.starved = true;
                    return Ok(used);
                }
                match self.frames.read_frame(&mut self.rx.buf) {
                    Ok(0) => return Err(Error::TapGone),
                    Ok(n) if !(VNET_HDR_LEN..=MAX_PACKET_LEN).contains(&n) => {
                        bump(&self.stats.rx_dropped, 1);
                        if self.log.allow() {
                            tracing::warn!(
                                "{}: dropped a {n}-byte frame from the tap (header included)",
                                self.name
                            );
                        }
                        continue;
                    }
                    Ok(n) => self.rx.pending = Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(used),
                    Err(e) => return Err(Error::TapRead(e)),
                }
            }
            if !self.deliver_pending(&mut used)? {
                self.rx.starved = true;
                return Ok(used);
            }
        }
        Ok(used)
    }

    /// Takes the next rx chain from the ring into `parked`, returning refused ones used
    /// with length 0. False when the ring has none: notifications are then on, so the
    /// driver's next buffer wakes the handler.
    fn park_rx_chain(&mut self, used: &mut bool) -> Result<bool, Error> {
        loop {
            let Some(chain) = next_chain(&mut self.q.rx, &self.mem).map_err(ring("rx"))? else {
                if self
                    .q
                    .rx
                    .enable_notification(&self.mem)
                    .map_err(ring("rx"))?
                {
                    continue; // a buffer arrived meanwhile
                }
                self.rx.notify_on = true;
                return Ok(false);
            };
            if self.rx.notify_on {
                self.q
                    .rx
                    .disable_notification(&self.mem)
                    .map_err(ring("rx"))?;
                self.rx.notify_on = false;
            }
            let head = chain.head_index();
            let mut segs = Vec::with_capacity(1);
            match walk(&self.mem, chain, true, |a, l| segs.push((a, l))) {
                Ok((cap, descs)) => {
                    self.rx.parked_descs += descs;
                    self.rx.parked.push_back(RxChain {
                        head,
                        segs,
                        cap,
                        descs,
                    });
                    return Ok(true);
                }
                Err(e) => {
                    bump(&self.stats.rx_bad_chains, 1);
                    if self.log.allow() {
                        tracing::warn!("{}: rx chain at descriptor {head} refused: {e}", self.name);
                    }
                    *used |= add_used_in_range(&mut self.q.rx, &self.mem, head, 0)
                        .map_err(ring("rx"))?;
                }
            }
        }
    }

    /// Puts the pending frame into parked chains (taking more from the ring as needed).
    /// False when the ring ran out of buffers before the frame fitted: it stays pending.
    /// A frame that can never fit (larger than one chain without MRG_RXBUF, or than all
    /// the buffers a full ring holds) is dropped; the chains stay for the next frame.
    fn deliver_pending(&mut self, used: &mut bool) -> Result<bool, Error> {
        let Some(len) = self.rx.pending else {
            return Ok(true);
        };
        let max_chains = if self.mrg_rxbuf { usize::MAX } else { 1 };
        let chains = loop {
            let mut cap = 0u64;
            let fits = self.rx.parked.iter().take(max_chains).position(|c| {
                cap += c.cap;
                cap >= len as u64
            });
            if let Some(i) = fits {
                break i + 1;
            }
            let ring_full = self.rx.parked.len() >= usize::from(self.q.rx.size())
                || self.rx.parked_descs >= usize::from(self.q.rx.size());
            if self.rx.parked.len() >= max_chains || ring_full {
                self.rx.pending = None;
                bump(&self.stats.rx_dropped, 1);
                if self.log.allow() {
                    tracing::warn!(
                        "{}: dropped a {len}-byte frame: larger than the rx buffers ({cap} bytes in {} chains)",
                        self.name,
                        self.rx.parked.len().min(max_chains)
                    );
                }
                return Ok(true);
            }
            if !self.park_rx_chain(used)? {
                return Ok(false);
            }
        };
        // `chains` is at most the queue size (32768), so it fits.
        let num_buffers = chains as u16;
        self.rx.buf[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2]
            .copy_from_slice(&num_buffers.to_le_bytes());
        let mut off = 0usize;
        for chain in self.rx.parked.drain(..chains) {
            self.rx.parked_descs -= chain.descs;
            let mut written = 0usize;
            for &(addr, seg_len) in &chain.segs {
                let n = (seg_len as usize).min(len - off);
                if n == 0 {
                    break;
                }
                // The range was checked when the chain was parked; guest RAM does not
                // shrink, so this cannot fail short of a VMM bug.
                if let Err(e) = self.mem.write_slice(&self.rx.buf[off..off + n], addr) {
                    if self.log.allow() {
                        tracing::warn!("{}: writing an rx buffer: {e}", self.name);
                    }
                }
                off += n;
                written += n;
            }
            *used |= add_used_in_range(&mut self.q.rx, &self.mem, chain.head, written as u32)
                .map_err(ring("rx"))?;
        }
        self.rx.pending = None;
        bump(&self.stats.rx_frames, 1);
        bump(&self.stats.rx_bytes, (len - VNET_HDR_LEN) as u64);
        Ok(true)
    }

    /// Sends the tx queue's chains to the tap (at most [`TX_BUDGET`]); stops at EAGAIN
    /// with the chain put back. Returns whether the used ring changed.
    fn process_tx(&mut self) -> Result<bool, Error> {
        let mut used = false;
        let mut budget = TX_BUDGET;
        loop {
            // No notifications while draining; re-enabling reports chains that came
            // in between (with EVENT_IDX it also moves avail_event).
            self.q
                .tx
                .disable_notification(&self.mem)
                .map_err(ring("tx"))?;
            while let Some(chain) = next_chain(&mut self.q.tx, &self.mem).map_err(ring("tx"))? {
                if budget == 0 {
                    // Let the other devices run; come back through our own eventfd.
                    self.q.tx.go_to_previous_position();
                    if let Err(e) = self.q.tx_evt.write(1) {
                        if self.log.allow() {
                            tracing::warn!("{}: re-signalling the tx queue: {e}", self.name);
                        }
                    }
                    return Ok(used);
                }
                budget -= 1;
                let head = chain.head_index();
                let mut segs = std::mem::take(&mut self.tx_segs);
                segs.clear();
                let checked = walk(&self.mem, chain, false, |a, l| segs.push((a, l)));
                // Ok(None): the chain was refused; Ok(Some(bytes)): the tap took it.
                let sent = match checked {
                    Ok((total, _)) => self.send(&segs).map(|()| Some(total)),
                    Err(e) => {
                        bump(&self.stats.tx_bad_chains, 1);
                        if self.log.allow() {
                            tracing::warn!(
                                "{}: tx chain at descriptor {head} refused: {e}",
                                self.name
                            );
                        }
                        Ok(None)
                    }
                };
                self.tx_segs = segs;
                match sent {
                    Ok(None) => {}
                    Ok(Some(total)) => {
                        bump(&self.stats.tx_frames, 1);
                        bump(&self.stats.tx_bytes, total - VNET_HDR_LEN as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.q.tx.go_to_previous_position();
                        self.tx_blocked = true;
                        return Ok(used);
                    }
                    Err(e) => {
                        bump(&self.stats.tx_errors, 1);
                        if self.log.allow() {
                            tracing::warn!("{}: the tap refused a frame: {e}", self.name);
                        }
                    }
                }
                used |=
                    add_used_in_range(&mut self.q.tx, &self.mem, head, 0).map_err(ring("tx"))?;
            }
            if !self
                .q
                .tx
                .enable_notification(&self.mem)
                .map_err(ring("tx"))?
            {
                return Ok(used);
            }
        }
    }

    /// One `writev` of the checked buffers `segs`, straight from guest memory.
    fn send(&self, segs: &[(GuestAddress, u32)]) -> io::Result<()> {
        let mut iov = Vec::with_capacity(segs.len());
        for &(addr, len) in segs {
            for slice in self.mem.get_slices(addr, len as usize) {
                let slice = slice.map_err(|e| io::Error::other(e.to_string()))?;
                iov.push(libc::iovec {
                    iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
                    iov_len: slice.len(),
                });
            }
        }
        // SAFETY: every iovec covers a slice of guest RAM that `self.mem` (a reference to
        // the mappings, held by this handler) keeps mapped for the whole call; the kernel
        // only reads it.
        unsafe { self.frames.write_frame(&iov) }.map(|_| ())
    }

    /// Makes the event loop watch the tap for what [`NetHandler::wanted_tap_events`] says.
    fn sync_tap_interest(&mut self, ops: &mut EventOps<'_>) -> Result<(), Error> {
        let want = self.wanted_tap_events();
        if want == self.registered {
            return Ok(());
        }
        let fd = self.frames.as_raw_fd();
        if self.registered.is_empty() {
            ops.add(fd, want)?;
        } else if want.is_empty() {
            // Not registered at all rather than for no events: epoll would still report
            // a hang-up over and over.
            ops.remove(fd)?;
        } else {
            ops.modify(fd, want)?;
        }
        self.registered = want;
        Ok(())
    }
}

impl EventHandler for NetHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle_event(&mut self, event: Event, ops: &mut EventOps<'_>) -> Result<(), HandlerError> {
        let wake = if event.fd == self.q.rx_evt.as_raw_fd() {
            Wake::RxQueue
        } else if event.fd == self.q.tx_evt.as_raw_fd() {
            Wake::TxQueue
        } else if event.fd == self.frames.as_raw_fd() {
            Wake::Tap(event.events)
        } else {
            return Ok(());
        };
        self.process(wake)?;
        self.sync_tap_interest(ops)?;
        Ok(())
    }

    fn broken(&mut self) {
        self.interrupt.set_needs_reset();
    }
}
