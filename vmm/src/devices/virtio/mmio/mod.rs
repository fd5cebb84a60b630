//! The virtio-mmio transport, virtio 1.x only (Version register = 2; virtio 1.2, 4.2).
//!
//! One [`MmioTransport`] per device, in a 4 KiB window of guest physical memory (from
//! [`crate::memory::MMIO_DEVICES_START`]). Registers, all 32-bit, little-endian:
//!
//! | offset | register | |
//! |---|---|---|
//! | 0x000 | MagicValue | "virt" |
//! | 0x004 | Version | 2 |
//! | 0x008 | DeviceID | [`VirtioDevice::device_type`] |
//! | 0x00c | VendorID | [`VENDOR_ID`] |
//! | 0x010 / 0x014 | DeviceFeatures / DeviceFeaturesSel | 32 bits of 64 at a time |
//! | 0x020 / 0x024 | DriverFeatures / DriverFeaturesSel | |
//! | 0x030 | QueueSel | |
//! | 0x034 | QueueNumMax | 0 for a queue that does not exist |
//! | 0x038 | QueueNum | |
//! | 0x044 | QueueReady | |
//! | 0x050 | QueueNotify | normally caught by a KVM ioeventfd (datamatch = queue index) |
//! | 0x060 / 0x064 | InterruptStatus / InterruptACK | |
//! | 0x070 | Status | |
//! | 0x080..0x0a4 | QueueDesc / QueueDriver / QueueDevice, Low and High | |
//! | 0x0fc | ConfigGeneration | |
//! | 0x100.. | device configuration space, any access width | |
//!
//! Status follows the driver's initialisation sequence: ACKNOWLEDGE, DRIVER, FEATURES_OK
//! (refused, i.e. not set, without VIRTIO_F_VERSION_1), DRIVER_OK, which activates the
//! device once every ready queue is valid. A queue that is not (size not a power of two or
//! above its maximum, misaligned, or rings outside guest memory) or a failing activation
//! sets DEVICE_NEEDS_RESET instead. Writing 0 resets the device. Everything here is guest
//! input: bad accesses are ignored with a rate-limited log, never a panic.

use super::{
    status, ActivateArgs, Interrupt, Queue, QueueT, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::devices::BusDevice;
use crate::event_loop::EventLoopHandle;
use crate::ratelimit::LogLimiter;
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Size of each device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
/// "virt", little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Modern (virtio 1.x) virtio-mmio.
pub const MMIO_VERSION: u32 = 2;
/// VendorID: "RUNV" read as little-endian ASCII.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"RUNV");
/// Offset of QueueNotify, the address of the queue ioeventfds.
pub const QUEUE_NOTIFY: u64 = 0x050;
/// Offset of the device configuration space.
pub const CONFIG_SPACE: u64 = 0x100;

/// A rate-limited warning naming the device: `log!(self, "format", args...)`.
macro_rules! log {
    ($t:expr, $($arg:tt)*) => {
        if $t.limiter.allow() {
            tracing::warn!("{}: {}", $t.name, format_args!($($arg)*));
        }
    };
}

/// Register offsets, as in the table above (QueueNotify is [`QUEUE_NOTIFY`]).
#[allow(missing_docs)]
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// What the driver wrote for one queue; turned into a [`Queue`] at DRIVER_OK.
#[derive(Debug, Clone, Copy, Default)]
struct QueueRegs {
    num: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// A virtio device behind virtio-mmio registers.
pub struct MmioTransport {
    name: String,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    event_loop: EventLoopHandle,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueRegs>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    activated: bool,
    limiter: LogLimiter,
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An eventfd for a queue notification could not be created.
    #[error("{device}: creating the eventfd of queue {queue}: {source}")]
    QueueEventFd {
        /// The device.
        device: String,
        /// Queue index.
        queue: usize,
        /// Cause.
        source: std::io::Error,
    },
    /// The device declares a queue size virtio does not allow.
    #[error("{device}: queue {queue} has maximum size {size}, not a power of two in 1..=32768")]
    QueueMaxSize {
        /// The device.
        device: String,
        /// Queue index.
        queue: usize,
        /// The size.
        size: u16,
    },
}

impl MmioTransport {
    /// Wraps `device` (called `name` in logs). `interrupt` carries the device's irqfd.
    pub fn new(
        name: String,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        event_loop: EventLoopHandle,
    ) -> Result<Self, Error> {
        let sizes = device.queue_max_sizes().to_vec();
        let mut queue_evts = Vec::with_capacity(sizes.len());
        for (queue, &size) in sizes.iter().enumerate() {
            if Queue::new(size).is_err() {
                return Err(Error::QueueMaxSize {
                    device: name,
                    queue,
                    size,
                });
            }
            queue_evts.push(EventFd::new(libc::EFD_NONBLOCK).map_err(|source| {
                Error::QueueEventFd {
                    device: name.clone(),
                    queue,
                    source,
                }
            })?);
        }
        let queues = sizes
            .iter()
            .map(|&num| QueueRegs {
                num,
                ..Default::default()
            })
            .collect();
        Ok(MmioTransport {
            name,
            device,
            mem,
            interrupt,
            event_loop,
            queue_evts,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
            limiter: LogLimiter::new(),
        })
    }

    /// The queue eventfds, in queue order: the VMM registers each as a KVM ioeventfd on
    /// `base + QUEUE_NOTIFY` with datamatch = its index.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Device status as the driver reads it.
    pub fn status(&self) -> u32 {
        if self.interrupt.needs_reset() {
            self.status | status::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// Whether the device has been activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | (1 << VIRTIO_F_VERSION_1)
    }

    fn selected_queue(&mut self) -> Option<&mut QueueRegs> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q
                .and(self.device.queue_max_sizes().get(self.queue_sel as usize))
                .map_or(0, |&m| u32::from(m)),
            reg::QUEUE_NUM => q.map_or(0, |q| u32::from(q.num)),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => 0,
        }
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
            && !self.interrupt.needs_reset()
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & (status::DRIVER | status::FEATURES_OK) != status::DRIVER {
                    return log!(
                        self,
                        "DriverFeatures written in status {:#x}; ignored",
                        self.status
                    );
                }
                match self.driver_features_sel {
                    0 => set_low(&mut self.driver_features, v),
                    1 => set_high(&mut self.driver_features, v),
                    sel => log!(self, "DriverFeatures with selector {sel}; ignored"),
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.write_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_reg(offset, v),
            QUEUE_NOTIFY => self.notify(v),
            _ => log!(self, "write {v:#x} to register {offset:#x}; ignored"),
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        // Linux disables queues (QueueReady = 0) after a reset too; that is always fine.
        let disable = offset == reg::QUEUE_READY && v == 0;
        if !self.queue_setup_allowed() && !disable {
            return log!(
                self,
                "queue register {offset:#x} written in status {:#x}; ignored",
                self.status
            );
        }
        let sel = self.queue_sel;
        let Some(q) = self.selected_queue() else {
            return log!(
                self,
                "queue register {offset:#x} for queue {sel}, which does not exist; ignored"
            );
        };
        match offset {
            // Truncation is checked at DRIVER_OK: a size above u16 becomes invalid there.
            reg::QUEUE_NUM => q.num = u16::try_from(v).unwrap_or(0),
            reg::QUEUE_READY => q.ready = v == 1,
            reg::QUEUE_DESC_LOW => set_low(&mut q.desc, v),
            reg::QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
            reg::QUEUE_DRIVER_LOW => set_low(&mut q.driver, v),
            reg::QUEUE_DRIVER_HIGH => set_high(&mut q.driver, v),
            reg::QUEUE_DEVICE_LOW => set_low(&mut q.device, v),
            _ => set_high(&mut q.device, v),
        }
    }

    /// A QueueNotify write that reached the VMM (no ioeventfd matched, e.g. in tests or for
    /// a value that is not a queue index).
    fn notify(&mut self, v: u32) {
        match self.queue_evts.get(v as usize) {
            Some(evt) if self.activated => {
                if let Err(e) = evt.write(1) {
                    log!(self, "signalling queue {v}: {e}");
                }
            }
            _ => log!(
                self,
                "QueueNotify {v} (status {:#x}, {} queues); ignored",
                self.status,
                self.queue_evts.len()
            ),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            return self.reset();
        }
        if v & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        // The driver only ever adds bits, one step of the sequence at a time.
        let old = self.status;
        let added = v & !old;
        let next_ok = v & old == old
            && match added {
                status::ACKNOWLEDGE => old == 0,
                status::DRIVER => old == status::ACKNOWLEDGE,
                status::FEATURES_OK => old == status::ACKNOWLEDGE | status::DRIVER,
                status::DRIVER_OK => {
                    old == status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
                }
                0 => true,
                _ => false,
            };
        if !next_ok {
            return log!(
                self,
                "status {v:#x} after {old:#x} breaks the initialisation sequence; ignored"
            );
        }
        match added {
            status::FEATURES_OK => {
                let acked = self.driver_features & self.offered_features();
                if acked & (1 << VIRTIO_F_VERSION_1) == 0 {
                    // FEATURES_OK stays clear: the driver reads it back and gives up.
                    return log!(self,
                        "driver features {:#x} lack VIRTIO_F_VERSION_1 (legacy drivers are not supported)",
                        self.driver_features
                    );
                }
                self.driver_features = acked;
                self.device.ack_features(acked);
                self.status = v;
            }
            status::DRIVER_OK => {
                self.status = v;
                self.activate();
            }
            _ => self.status = v,
        }
    }

    /// Builds the queues from the driver's registers; `Err` names the first bad one.
    fn build_queues(&self) -> Result<Vec<Queue>, String> {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut out = Vec::with_capacity(self.queues.len());
        for (i, (regs, &max)) in self
            .queues
            .iter()
            .zip(self.device.queue_max_sizes())
            .enumerate()
        {
            let mut q = Queue::new(max).map_err(|e| format!("queue {i}: {e:?}"))?;
            if regs.ready {
                q.try_set_size(regs.num)
                    .map_err(|_| format!("queue {i}: size {} (maximum {max})", regs.num))?;
                q.try_set_desc_table_address(GuestAddress(regs.desc))
                    .map_err(|_| format!("queue {i}: descriptor table {:#x}", regs.desc))?;
                q.try_set_avail_ring_address(GuestAddress(regs.driver))
                    .map_err(|_| format!("queue {i}: driver area {:#x}", regs.driver))?;
                q.try_set_used_ring_address(GuestAddress(regs.device))
                    .map_err(|_| format!("queue {i}: device area {:#x}", regs.device))?;
                q.set_event_idx(event_idx);
                q.set_ready(true);
                let starts_in_ram = [regs.desc, regs.driver, regs.device]
                    .iter()
                    .all(|&a| self.mem.address_in_range(GuestAddress(a)));
                if !starts_in_ram || !q.is_valid(&self.mem) {
                    return Err(format!(
                        "queue {i}: rings at {:#x}/{:#x}/{:#x} (size {}) are not inside guest memory",
                        regs.desc, regs.driver, regs.device, regs.num
                    ));
                }
            }
            out.push(q);
        }
        Ok(out)
    }

    fn activate(&mut self) {
        if self.interrupt.needs_reset() {
            return log!(self, "DRIVER_OK on a device that needs a reset; ignored");
        }
        let queues = match self.build_queues() {
            Ok(q) => q,
            Err(why) => {
                log!(self, "invalid queue set-up, device needs reset: {why}");
                self.interrupt.set_needs_reset();
                return;
            }
        };
        let mut queue_evts = Vec::with_capacity(self.queue_evts.len());
        for (i, evt) in self.queue_evts.iter().enumerate() {
            match evt.try_clone() {
                Ok(e) => queue_evts.push(e),
                Err(e) => {
                    log!(self, "cloning the eventfd of queue {i}: {e}");
                    self.interrupt.set_needs_reset();
                    return;
                }
            }
        }
        let args = ActivateArgs {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            interrupt: self.interrupt.clone(),
            event_loop: self.event_loop.clone(),
        };
        match self.device.activate(args) {
            Ok(()) => self.activated = true,
            Err(e) => {
                log!(self, "activation failed, device needs reset: {e}");
                self.interrupt.set_needs_reset();
            }
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.interrupt.reset();
        for evt in &self.queue_evts {
            // Drop notifications from before the reset (EAGAIN when there are none).
            let _ = evt.read();
        }
        for (q, &max) in self.queues.iter_mut().zip(self.device.queue_max_sizes()) {
            *q = QueueRegs {
                num: max,
                ..Default::default()
            };
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
    }
}

impl BusDevice<u64> for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE {
            return self.device.read_config(offset - CONFIG_SPACE, data);
        }
        if data.len() != 4 || offset % 4 != 0 {
            return log!(
                self,
                "{}-byte read of register {offset:#x}; registers are 32-bit",
                data.len()
            );
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            return self.device.write_config(offset - CONFIG_SPACE, data);
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return log!(
                self,
                "{}-byte write to register {offset:#x}; registers are 32-bit",
                data.len()
            );
        };
        if offset % 4 != 0 {
            return log!(self, "unaligned write to register {offset:#x}");
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
