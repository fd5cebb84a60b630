//! What the virtio devices do alike, written once.
//!
//! * [`Device`] is the [`VirtioDevice`] of every device here: `Device<K>` for a [`DeviceKind`]
//!   `K` (the device's own state: its features, how it activates, what its reset does to
//!   its backend). Everything else is the same for all and lives in [`DeviceCommon`]: the
//!   device's name, its configuration space (read-only for every device here: reads are
//!   bounded, guest writes are ignored with a rate-limited log line), the features the
//!   driver acknowledged, and the activation bookkeeping: the handler registered with the
//!   event loop at `activate`, removed at `reset`.
//! * Queue helpers for a device's `handler.rs`: the next chain of a ring ([`next_chain`]),
//!   a used entry for a head index the guest chose ([`add_used_in_range`]), the used-buffer
//!   interrupt whose failure is only logged ([`signal_used_queue`]), and the queue eventfds
//!   to register ([`queue_fds`]).

use super::{
    read_config_bytes, ActivateArgs, ActivateError, Interrupt, Queue, QueueT, VirtioDevice,
};
use crate::event_loop::{EventHandler, EventLoopHandle, EventSet, HandlerId};
use crate::ratelimit::LogLimiter;
use std::os::fd::{AsRawFd, RawFd};
use virtio_queue::{DescriptorChain, QueueOwnedT};
use vm_memory::{GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// What makes a [`Device`] a block, file-system, socket or network device: its own state
/// and the answers of [`VirtioDevice`] that are its own. The rest is [`Device`]'s.
pub trait DeviceKind: Send {
    /// [`VirtioDevice::device_type`] ([`TYPE_BLOCK`](super::TYPE_BLOCK) ...).
    const DEVICE_TYPE: u32;
    /// [`VirtioDevice::queue_max_sizes`].
    const QUEUE_MAX_SIZES: &'static [u16];

    /// [`VirtioDevice::features`].
    fn features(&self) -> u64;

    /// [`VirtioDevice::activate`]: checks `args`, builds the handler and registers it with
    /// [`DeviceCommon::register`].
    fn activate(
        &mut self,
        common: &mut DeviceCommon,
        args: ActivateArgs,
    ) -> Result<(), ActivateError>;

    /// What [`VirtioDevice::reset`] does beyond removing the handler and forgetting the
    /// features, done after that; `acked_features` are the features the driver had
    /// acknowledged. Nothing by default.
    fn reset(&mut self, _common: &mut DeviceCommon, _acked_features: u64) {}
}

/// A virtio device: its [`DeviceKind`] and what every device has alike.
pub struct Device<K> {
    /// The device's own part (declared first: it is dropped first, as a device's own
    /// fields were before the common part existed).
    pub(super) kind: K,
    /// Name, config space, acknowledged features, the registered handler.
    pub(super) common: DeviceCommon,
}

impl<K> Device<K> {
    /// A device called `name` in logs and errors, with the configuration space `config`
    /// (its bytes as the driver reads them, little-endian fields).
    pub fn from_parts(name: String, config: &[u8], kind: K) -> Self {
        Device {
            kind,
            common: DeviceCommon {
                name,
                config: config.into(),
                acked_features: 0,
                active: None,
                log: LogLimiter::new(),
            },
        }
    }

    /// Name for logs, e.g. "virtio-blk vda".
    pub fn name(&self) -> &str {
        self.common.name()
    }

    /// Whether a handler is registered with the event loop.
    pub fn is_active(&self) -> bool {
        self.common.is_active()
    }
}

impl<K: DeviceKind> VirtioDevice for Device<K> {
    fn device_type(&self) -> u32 {
        K::DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        K::QUEUE_MAX_SIZES
    }

    fn features(&self) -> u64 {
        self.kind.features()
    }

    fn ack_features(&mut self, features: u64) {
        self.common.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.common.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every config field here is read-only for a 1.x driver (virtio-net's MAC is
        // writable only for legacy ones). The guest chooses how often: rate-limited.
        self.common.warn(format_args!(
            "{}-byte write to the read-only config at {offset:#x}; ignored",
            data.len()
        ));
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        self.kind.activate(&mut self.common, args)
    }

    fn reset(&mut self) {
        // The handler goes first (waiting for a callback in progress), so the kind's reset
        // finds its backend no longer in use.
        let acked = self.common.acked_features;
        self.common.remove_handler();
        self.common.acked_features = 0;
        self.kind.reset(&mut self.common, acked);
    }
}

/// The part of a [`Device`] every device has alike, lent to its [`DeviceKind`]'s
/// `activate` and `reset`.
pub struct DeviceCommon {
    name: String,
    config: Box<[u8]>,
    acked_features: u64,
    active: Option<(EventLoopHandle, HandlerId)>,
    log: LogLimiter,
}

impl DeviceCommon {
    /// Name for logs, e.g. "virtio-blk vda".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the driver acknowledged (0 before negotiation and after a reset).
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether a handler is registered with the event loop.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// A rate-limited warning naming the device, for what a guest can cause.
    pub fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        if self.log.allow() {
            tracing::warn!("{}: {message}", self.name);
        }
    }

    /// [`ActivateError::Invalid`] naming the device.
    pub fn invalid(&self, reason: impl Into<String>) -> ActivateError {
        ActivateError::Invalid {
            device: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// [`ActivateError::Io`] naming the device: `what` failed with `source`.
    pub fn io_error(&self, what: impl Into<String>, source: std::io::Error) -> ActivateError {
        ActivateError::Io {
            device: self.name.clone(),
            what: what.into(),
            source,
        }
    }

    /// Refuses a second activation without a reset in between (the transport never asks
    /// for one; a device that would rather replace its handler calls
    /// [`DeviceCommon::remove_handler`] instead).
    pub fn check_inactive(&self) -> Result<(), ActivateError> {
        if self.is_active() {
            return Err(self.invalid("activated twice without a reset"));
        }
        Ok(())
    }

    /// Checks that `args` brings `count` queues and as many queue eventfds.
    pub fn check_queue_count(
        &self,
        args: &ActivateArgs,
        count: usize,
    ) -> Result<(), ActivateError> {
        if args.queues.len() != count || args.queue_evts.len() != count {
            return Err(self.invalid(format!(
                "{} queues and {} queue eventfds, expected {count}",
                args.queues.len(),
                args.queue_evts.len()
            )));
        }
        Ok(())
    }

    /// Registers `handler` with `event_loop`, woken for each of `fds`, and remembers it
    /// for [`DeviceCommon::remove_handler`]. The end of a successful `activate`.
    pub fn register(
        &mut self,
        event_loop: EventLoopHandle,
        handler: Box<dyn EventHandler>,
        fds: &[(RawFd, EventSet)],
    ) -> Result<(), ActivateError> {
        let id =
            event_loop
                .add_handler(handler, fds)
                .map_err(|source| ActivateError::EventLoop {
                    device: self.name.clone(),
                    source,
                })?;
        self.active = Some((event_loop, id));
        Ok(())
    }

    /// Removes the registered handler, if any. Waits for a callback in progress, so the
    /// handler (queues, guest memory, whatever it held) is dropped and no longer used when
    /// this returns.
    pub fn remove_handler(&mut self) {
        if let Some((event_loop, id)) = self.active.take() {
            event_loop.remove_handler(id);
        }
    }
}

/// The next chain of `queue`. `iter` (unlike `pop_descriptor_chain`) reports an avail
/// index that runs more than a queue ahead: such a ring is broken, not empty.
pub fn next_chain<'m, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'m M,
) -> Result<Option<DescriptorChain<&'m M>>, virtio_queue::Error> {
    Ok(queue.iter(mem)?.next())
}

/// Puts `head` in the used ring with `len` bytes written; `Ok(false)`, and nothing
/// written, for a head index beyond the queue, which a guest can put in the avail ring
/// but which has no used slot.
pub fn add_used_in_range(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<bool, virtio_queue::Error> {
    if head >= queue.size() {
        return Ok(false);
    }
    queue.add_used(mem, head, len)?;
    Ok(true)
}

/// Tells the driver a queue has new used buffers. A failure (the irqfd cannot be
/// written) does not stop the device: it is logged, rate-limited, as `name`'s.
pub fn signal_used_queue(interrupt: &Interrupt, log: &mut LogLimiter, name: &str) {
    if let Err(e) = interrupt.signal_used_queue() {
        if log.allow() {
            tracing::warn!("{name}: raising the interrupt: {e}");
        }
    }
}

/// The descriptors to register a handler with for its queues: every queue eventfd, for
/// input, in queue order.
pub fn queue_fds(queue_evts: &[EventFd]) -> Vec<(RawFd, EventSet)> {
    queue_evts
        .iter()
        .map(|e| (e.as_raw_fd(), EventSet::IN))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_memory, Activation};
    use crate::event_loop::{Event, EventLoop, EventOps, HandlerError};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A handler that never runs: the tests only count registrations.
    struct Idle;

    impl EventHandler for Idle {
        fn name(&self) -> &str {
            "idle"
        }

        fn handle_event(&mut self, _: Event, _: &mut EventOps<'_>) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    /// A kind that registers one idle handler and records what its reset saw.
    struct Probe {
        reset_saw: Arc<AtomicU64>,
    }

    impl DeviceKind for Probe {
        const DEVICE_TYPE: u32 = 99;
        const QUEUE_MAX_SIZES: &'static [u16] = &[8];

        fn features(&self) -> u64 {
            1 << 3
        }

        fn activate(
            &mut self,
            common: &mut DeviceCommon,
            args: ActivateArgs,
        ) -> Result<(), ActivateError> {
            common.check_queue_count(&args, Self::QUEUE_MAX_SIZES.len())?;
            common.check_inactive()?;
            let fds = queue_fds(&args.queue_evts);
            common.register(args.event_loop, Box::new(Idle), &fds)
        }

        fn reset(&mut self, common: &mut DeviceCommon, acked_features: u64) {
            assert!(!common.is_active(), "the handler is removed first");
            self.reset_saw.store(acked_features, Ordering::SeqCst);
        }
    }

    fn probe() -> (Device<Probe>, Arc<AtomicU64>) {
        let reset_saw = Arc::new(AtomicU64::new(u64::MAX));
        let kind = Probe {
            reset_saw: reset_saw.clone(),
        };
        (
            Device::from_parts("probe".into(), &[1, 2, 3], kind),
            reset_saw,
        )
    }

    #[test]
    fn the_config_space_is_read_bounded_and_never_written() {
        let (mut dev, _) = probe();
        assert_eq!(
            (dev.device_type(), dev.queue_max_sizes()),
            (99, &[8u16][..])
        );
        assert_eq!(dev.features(), 1 << 3);
        dev.write_config(0, &[9, 9]);
        let mut d = [0u8; 4];
        dev.read_config(1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        let mut d = [0u8; 2];
        dev.read_config(u64::MAX, &mut d);
        assert_eq!(d, [0, 0]);
    }

    #[test]
    fn activation_registers_one_handler_and_reset_removes_it() {
        let mem = guest_memory(0x1_0000);
        let el = EventLoop::start().unwrap();
        let (mut dev, reset_saw) = probe();
        let e = dev
            .activate(Activation::new(&mem, Vec::new(), &el).args)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "probe: cannot activate: 0 queues and 0 queue eventfds, expected 1"
        );
        dev.ack_features(0x30);
        let queue = || vec![Queue::new(8).unwrap()];
        dev.activate(Activation::new(&mem, queue(), &el).args)
            .unwrap();
        assert!(dev.is_active());
        assert_eq!(el.handle().handler_count(), 1);
        let e = dev
            .activate(Activation::new(&mem, queue(), &el).args)
            .unwrap_err();
        assert!(e.to_string().contains("activated twice"), "{e}");
        dev.reset();
        assert!(!dev.is_active());
        assert_eq!(el.handle().handler_count(), 0);
        assert_eq!(reset_saw.load(Ordering::SeqCst), 0x30);
        assert_eq!(dev.common.acked_features(), 0);
        dev.reset();
        assert_eq!(reset_saw.load(Ordering::SeqCst), 0, "features forgotten");
        el.stop();
    }

    #[test]
    fn a_head_beyond_the_queue_gets_no_used_entry() {
        let mem = guest_memory(0x1_0000);
        let mut queue = Queue::new(8).unwrap();
        assert!(!add_used_in_range(&mut queue, &mem, 8, 0).unwrap());
    }
}
