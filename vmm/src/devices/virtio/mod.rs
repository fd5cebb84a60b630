//! virtio devices: the [`VirtioDevice`] trait every device implements, the [`Interrupt`]
//! a device raises, and the constants devices and the transport share.
//!
//! # How a device fits in
//!
//! ```text
//!  vCPU thread (MMIO exit)             event-loop thread ("devices")
//!  mmio::MmioTransport ---calls--->    VirtioDevice (device.rs: features, config,
//!    registers, status,                  activate/reset)
//!    queue set-up           activate --> registers an EventHandler (handler.rs: queue
//!                                        processing) with the EventLoopHandle
//!  guest QueueNotify --KVM ioeventfd--> queue_evts[i] readable --> handler runs
//!  handler --Interrupt::signal_used_queue--> irqfd --> guest interrupt (GSI of the device)
//! ```
//!
//! * The **transport** (`mmio/`) owns the registers, the queues while the driver sets them
//!   up, the ioeventfds (one per queue, registered with KVM so a notification never exits
//!   to a vCPU thread) and the irqfd. It offers [`VIRTIO_F_VERSION_1`] itself (devices need
//!   not), refuses FEATURES_OK without it, and masks the driver's features to what was
//!   offered before [`VirtioDevice::ack_features`].
//! * When the driver sets DRIVER_OK and every ready queue is valid (inside guest memory,
//!   size a power of two up to the maximum), the transport calls
//!   [`VirtioDevice::activate`] once, with the queues, a clone of each queue's eventfd, the
//!   device's [`Interrupt`] and the [`EventLoopHandle`]. An `Err` from `activate` marks
//!   the device DEVICE_NEEDS_RESET; the VMM goes on.
//! * The device moves the queues into its handler and registers the handler (queue
//!   eventfds, plus any fd of its own, e.g. the Unix sockets of vsock) with
//!   [`EventLoopHandle::add_handler`]. The handler must keep the device's state it needs
//!   (an `Arc` shared with the device object, if anything); it must never lock the
//!   transport, which a vCPU thread may hold while it calls [`VirtioDevice::reset`].
//! * When the driver writes 0 to Status, the transport calls [`VirtioDevice::reset`]: the
//!   device removes its handler ([`EventLoopHandle::remove_handler`] waits for a callback
//!   in progress) and drops the queues and memory it was given; it may be activated again.
//! * What every device does alike (name, read-only config space, acknowledged features,
//!   the handler registered at activation and removed at reset, and the queue helpers the
//!   handlers share) is in [`common`]; a device's own files hold only what is its own.
//!
//! # Guest input
//! Everything in the queues is guest-controlled: lengths, addresses, indexes, descriptor
//! flags. Use `virtio_queue`'s `DescriptorChain` (it bounds chains and detects loops),
//! check every length and direction, never index with a guest value unchecked, and fail
//! one request (an error status in the used ring) for one malformed chain. Log what the
//! guest causes through [`crate::ratelimit::LogLimiter`].
//!
//! # Tests
//! Devices are tested without KVM with the fixtures of `test_utils` (this crate's tests
//! only): guest memory, descriptor flags and chains, a `TestQueue` on virtio-queue's
//! `MockSplitQueue`, the `ActivateArgs` of a device on an
//! [`EventLoop`](crate::event_loop::EventLoop) with [`Interrupt::for_tests`], and a seeded
//! generator for random input. A new device's tests use them too.

pub mod block;
pub mod common;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod vsock;

#[cfg(test)]
pub(crate) mod test_utils;

use crate::event_loop::{self, EventLoopHandle};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vmm_sys_util::eventfd::EventFd;

pub use virtio_queue::{Queue, QueueT};
pub use vm_memory::GuestMemoryMmap;

/// Device IDs (virtio 1.2, 5).
pub const TYPE_NET: u32 = 1;
/// Block device.
pub const TYPE_BLOCK: u32 = 2;
/// Socket device (vsock).
pub const TYPE_VSOCK: u32 = 19;
/// File system device.
pub const TYPE_FS: u32 = 26;

/// Feature bit: the device is virtio 1.x (modern). Offered by the transport for every device.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit: indirect descriptors.
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
/// Feature bit: used_event / avail_event notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may use the queues.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is done.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bit: a queue has new used buffers.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration space changed.
pub const INT_CONFIG: u32 = 2;

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver's set-up does not fit the device (e.g. a queue count, a feature set).
    #[error("{device}: cannot activate: {reason}")]
    Invalid {
        /// The device, e.g. "virtio-blk vda".
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// Registering with the event loop failed.
    #[error("{device}: cannot register with the event loop: {source}")]
    EventLoop {
        /// The device.
        device: String,
        /// Cause.
        source: event_loop::Error,
    },
    /// The backend (a file, a socket, a directory) failed.
    #[error("{device}: {what}: {source}")]
    Io {
        /// The device.
        device: String,
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// What [`VirtioDevice::activate`] receives.
pub struct ActivateArgs {
    /// Guest memory (cheap to clone: the regions are reference-counted).
    pub mem: GuestMemoryMmap,
    /// One queue per entry of [`VirtioDevice::queue_max_sizes`], in order, with the
    /// driver's size and addresses, already checked to lie inside `mem`. A queue the
    /// driver did not enable has `ready() == false`; do not process it.
    pub queues: Vec<Queue>,
    /// `queue_evts[i]` becomes readable when the driver notifies queue `i` (KVM writes it
    /// on the guest's QueueNotify write). Read it (to clear it) before processing.
    pub queue_evts: Vec<EventFd>,
    /// Raises the device's interrupt.
    pub interrupt: std::sync::Arc<Interrupt>,
    /// Where the device registers its handler.
    pub event_loop: EventLoopHandle,
}

/// A virtio device, independent of the transport. Implemented by each device's
/// `device.rs`; called by the transport from a vCPU thread, under the transport's lock.
pub trait VirtioDevice: Send {
    /// virtio device ID ([`TYPE_BLOCK`], [`TYPE_VSOCK`], [`TYPE_FS`] ...).
    fn device_type(&self) -> u32;

    /// Largest size of each queue (a power of two, at most 32768); the length is the
    /// number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers (64-bit; the transport adds [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;

    /// The features the driver accepted, masked to what was offered, including
    /// [`VIRTIO_F_VERSION_1`]. Called once per negotiation, before `activate`.
    fn ack_features(&mut self, features: u64);

    /// Reads the device-specific configuration space at `offset` (0 = the first byte of
    /// the device's config, register 0x100 on virtio-mmio). Guest-controlled: any offset
    /// and length must work; bytes beyond the config read as 0 (`data` arrives zeroed).
    /// [`read_config_bytes`] does this for a config kept as bytes.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the configuration space. Ignore (and rate-limit a log of) writes to
    /// read-only or nonexistent fields.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device: called once when the driver sets DRIVER_OK. See [`ActivateArgs`].
    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError>;

    /// Back to the state before `activate` (the driver wrote 0 to Status, or the VMM
    /// resets the device): remove the handler from the event loop, drop queues, memory
    /// and interrupt, forget acknowledged features. Also called on a device that was never
    /// activated. Must not fail.
    fn reset(&mut self);
}

/// Copies `config[offset..]` into `data`, leaving bytes past the end of `config`
/// untouched (zero). For [`VirtioDevice::read_config`].
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// A device's interrupt line and interrupt status, shared by the transport (which reads
/// and acknowledges the status) and the device's handler (which raises it).
///
/// The line is a KVM irqfd: writing it injects the device's GSI without a vCPU exit.
pub struct Interrupt {
    irqfd: EventFd,
    status: AtomicU32,
    needs_reset: AtomicBool,
    config_generation: AtomicU32,
}

impl Interrupt {
    /// Wraps an irqfd (already registered with KVM for the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            irqfd,
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU32::new(0),
        }
    }

    /// An interrupt on a plain eventfd, for tests: [`Interrupt::irqfd`] reads back
    /// whether it fired.
    pub fn for_tests() -> std::io::Result<Self> {
        Ok(Self::new(EventFd::new(libc::EFD_NONBLOCK)?))
    }

    fn raise(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// Tells the driver a queue has new used buffers (sets [`INT_VRING`]). Call after
    /// `add_used` when `needs_notification` says so.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.raise(INT_VRING)
    }

    /// Tells the driver the configuration space changed (bumps ConfigGeneration, sets
    /// [`INT_CONFIG`]).
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(INT_CONFIG)
    }

    /// Marks the device broken: Status gets DEVICE_NEEDS_RESET and the driver gets a
    /// configuration interrupt (virtio 1.2, 2.1.2). The device stays so until reset.
    pub fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        if let Err(e) = self.raise(INT_CONFIG) {
            tracing::warn!("raising the configuration interrupt of a broken device: {e}");
        }
    }

    /// Whether [`Interrupt::set_needs_reset`] was called since the last reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// InterruptStatus as the driver reads it.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// ConfigGeneration as the driver reads it.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    /// Device reset: no pending interrupt, not broken.
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }

    /// The eventfd behind the interrupt (tests read it to see whether it fired).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded_and_zero_filled() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [0u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        let mut d = [0u8; 8];
        read_config_bytes(&cfg, 100, &mut d);
        assert_eq!(d, [0; 8]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 8]);
    }

    #[test]
    fn interrupt_status_is_raised_acked_and_reset() {
        let i = Interrupt::for_tests().unwrap();
        i.signal_used_queue().unwrap();
        assert_eq!(i.status(), INT_VRING);
        assert_eq!(i.irqfd().read().unwrap(), 1);
        i.signal_config_change().unwrap();
        assert_eq!(i.status(), INT_VRING | INT_CONFIG);
        assert_eq!(i.config_generation(), 1);
        i.ack(INT_VRING);
        assert_eq!(i.status(), INT_CONFIG);
        i.set_needs_reset();
        assert!(i.needs_reset());
        i.reset();
        assert_eq!(i.status(), 0);
        assert!(!i.needs_reset());
    }
}
