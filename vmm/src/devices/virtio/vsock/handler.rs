//! Queue processing: guest TX chains to the muxer, muxer packets into guest RX chains.
//! Transport-agnostic (plain functions over a queue, guest memory and the muxer), plus the
//! event-loop handler that calls them.
//!
//! A malformed chain (too short, header outside guest memory, wrong direction, payload
//! larger than [`MAX_PKT_DATA`] or than its buffer) is returned to the guest unused, with
//! a rate-limited log line; it never stops the device. A corrupt ring (an avail index
//! more than a queue ahead, a used ring that cannot be written) does: the handler fails
//! and the guest sees DEVICE_NEEDS_RESET.

use super::muxer::Muxer;
use super::packet::Hdr;
use super::MAX_PKT_DATA;
use crate::devices::virtio::common::{add_used_in_range, next_chain};
use crate::devices::virtio::{GuestMemoryMmap, Interrupt, Queue, QueueT};
use crate::event_loop::{Event, EventHandler, EventOps, HandlerError};
use crate::ratelimit::LogLimiter;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::QueueOwnedT;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vmm_sys_util::eventfd::EventFd;

/// Queue indexes (virtio spec 5.10.2).
pub const RX_QUEUE: usize = 0;
/// Guest to device.
pub const TX_QUEUE: usize = 1;
/// Device events (transport reset); never used by this device.
pub const EVENT_QUEUE: usize = 2;

/// Errors that stop the device (the guest then sees DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the used ring failed (its address was checked at activation).
    #[error("vsock {queue} queue: adding descriptor {head} to the used ring: {source}")]
    UsedRing {
        /// "rx" or "tx".
        queue: &'static str,
        /// The chain's head index.
        head: u16,
        /// Cause.
        source: virtio_queue::Error,
    },
    /// The ring is corrupt (an avail index more than a queue ahead) or its notification
    /// fields cannot be accessed.
    #[error("vsock {queue} queue: {source}")]
    Ring {
        /// "rx" or "tx".
        queue: &'static str,
        /// Cause.
        source: virtio_queue::Error,
    },
    /// The muxer's epoll failed.
    #[error(transparent)]
    Muxer(#[from] super::muxer::Error),
    /// Raising the interrupt failed.
    #[error("vsock: raising the interrupt: {0}")]
    Interrupt(std::io::Error),
}

fn ring(queue: &'static str) -> impl Fn(virtio_queue::Error) -> Error {
    move |source| Error::Ring { queue, source }
}

fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    name: &'static str,
    head: u16,
    len: u32,
    log: &mut LogLimiter,
) -> Result<bool, Error> {
    let added = add_used_in_range(queue, mem, head, len).map_err(|source| Error::UsedRing {
        queue: name,
        head,
        source,
    })?;
    // A guest-written head index out of range has no used slot to go to.
    if !added && log.allow() {
        tracing::warn!("vsock {name} queue: descriptor index {head} out of range, dropped");
    }
    Ok(added)
}

/// Hands every chain of the TX queue to the muxer. Returns whether the used ring changed.
pub fn process_tx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    muxer: &mut Muxer,
    log: &mut LogLimiter,
) -> Result<bool, Error> {
    let mut used = false;
    loop {
        // No notifications while the queue is being drained; re-enabling them reports
        // chains that arrived in between (with EVENT_IDX it also sets avail_event).
        queue.disable_notification(mem).map_err(ring("tx"))?;
        while let Some(mut chain) = next_chain(queue, mem).map_err(ring("tx"))? {
            let head = chain.head_index();
            match VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => muxer.send_pkt(&Hdr::from_packet(&pkt), pkt.data_slice()),
                Err(e) => {
                    if log.allow() {
                        tracing::warn!(
                            "vsock tx: malformed chain at descriptor {head} dropped: {e}"
                        );
                    }
                }
            }
            used |= add_used(queue, mem, "tx", head, 0, log)?;
        }
        if !queue.enable_notification(mem).map_err(ring("tx"))? {
            return Ok(used);
        }
    }
}

/// Fills RX chains with the muxer's packets while both last. Returns whether the used
/// ring changed.
pub fn process_rx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    muxer: &mut Muxer,
    log: &mut LogLimiter,
) -> Result<bool, Error> {
    let mut used = false;
    loop {
        let (more_used, starved) = fill_rx(queue, mem, muxer, log)?;
        used |= more_used;
        // avail_event follows our position (EVENT_IDX), so the driver's next buffer is
        // notified; when buffers ran out, retry if some arrived meanwhile.
        let arrived = queue.enable_notification(mem).map_err(ring("rx"))?;
        if !(starved && arrived) {
            return Ok(used);
        }
    }
}

/// One pass of [`process_rx`]: (used ring changed, stopped for lack of buffers).
fn fill_rx(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    muxer: &mut Muxer,
    log: &mut LogLimiter,
) -> Result<(bool, bool), Error> {
    let mut used = false;
    while muxer.has_pending_rx() {
        let Some(mut chain) = next_chain(queue, mem).map_err(ring("rx"))? else {
            return Ok((used, true));
        };
        let head = chain.head_index();
        let len = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
            Ok(mut pkt) => {
                let Some(buf) = pkt.data_slice().copied() else {
                    // from_rx_virtq_chain always gives a data buffer; be safe anyway.
                    queue.go_to_previous_position();
                    break;
                };
                match muxer.recv_pkt(&buf) {
                    Some(hdr) => {
                        hdr.write_to(&mut pkt);
                        PKT_HEADER_SIZE as u32 + hdr.len
                    }
                    None => {
                        // Nothing after all (a host stream had no data): keep the buffer.
                        queue.go_to_previous_position();
                        break;
                    }
                }
            }
            Err(e) => {
                if log.allow() {
                    tracing::warn!("vsock rx: malformed chain at descriptor {head} dropped: {e}");
                }
                0
            }
        };
        used |= add_used(queue, mem, "rx", head, len, log)?;
    }
    Ok((used, false))
}

/// The device's work on the event-loop thread: queue notifications and the muxer's fd.
pub struct VsockHandler {
    name: String,
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    queue_evts: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    muxer: Arc<Mutex<Muxer>>,
    muxer_fd: RawFd,
    log: LogLimiter,
}

fn lock(m: &Mutex<Muxer>) -> MutexGuard<'_, Muxer> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VsockHandler {
    /// A handler over the RX and TX queues (the event queue is never used).
    pub fn new(
        name: String,
        mem: GuestMemoryMmap,
        rxq: Queue,
        txq: Queue,
        queue_evts: Vec<EventFd>,
        interrupt: Arc<Interrupt>,
        muxer: Arc<Mutex<Muxer>>,
    ) -> Self {
        let muxer_fd = lock(&muxer).as_raw_fd();
        VsockHandler {
            name,
            mem,
            rxq,
            txq,
            queue_evts,
            interrupt,
            muxer,
            muxer_fd,
            log: LogLimiter::new(),
        }
    }

    /// The muxer's epoll fd, to be watched for IN.
    pub fn muxer_fd(&self) -> RawFd {
        self.muxer_fd
    }

    fn run(&mut self, fd: RawFd) -> Result<(), Error> {
        let mut muxer = lock(&self.muxer);
        let (mut tx_used, mut rx_used) = (false, false);
        if let Some(i) = self.queue_evts.iter().position(|e| e.as_raw_fd() == fd) {
            // Clear the notification; an empty counter (spurious wake) is fine.
            let _ = self.queue_evts[i].read();
            if i == TX_QUEUE && self.txq.ready() {
                tx_used = process_tx(&mut self.txq, &self.mem, &mut muxer, &mut self.log)?;
            }
        } else if fd == self.muxer_fd {
            muxer.process_host_events()?;
        }
        if self.rxq.ready() {
            rx_used = process_rx(&mut self.rxq, &self.mem, &mut muxer, &mut self.log)?;
        }
        drop(muxer);
        // With EVENT_IDX the driver says when it wants an interrupt; without it, always.
        let mut notify = false;
        if tx_used {
            notify |= self.txq.needs_notification(&self.mem).map_err(ring("tx"))?;
        }
        if rx_used {
            notify |= self.rxq.needs_notification(&self.mem).map_err(ring("rx"))?;
        }
        if notify {
            self.interrupt
                .signal_used_queue()
                .map_err(Error::Interrupt)?;
        }
        Ok(())
    }
}

impl EventHandler for VsockHandler {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle_event(&mut self, event: Event, _ops: &mut EventOps<'_>) -> Result<(), HandlerError> {
        Ok(self.run(event.fd)?)
    }

    fn broken(&mut self) {
        self.interrupt.set_needs_reset();
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
