//! Devices: legacy ones on the port-I/O bus, virtio-mmio on the MMIO bus, and the buses.

pub mod i8042;
pub mod power;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

/// A device on the port-I/O bus. `offset` is relative to the device's base port.
/// Guest-controlled: any offset and length must be handled without panicking.
pub trait PioDevice: Send {
    /// Guest `in`: fill `data`.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest `out`.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// A device on the MMIO bus. `offset` is relative to the device's base address.
/// Guest-controlled: any offset and length (1 to 8 bytes) must be handled without panicking.
pub trait MmioDevice: Send {
    /// Guest load: fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest store.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors of bus set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two devices claim the same port.
    #[error("port range {base:#x}+{len} overlaps a device already on the bus")]
    Overlap {
        /// Base port.
        base: u16,
        /// Ports.
        len: u16,
    },
    /// Two MMIO devices claim the same addresses.
    #[error("MMIO range {base:#x}+{len:#x} overlaps a device already on the bus or wraps")]
    MmioOverlap {
        /// Base address.
        base: u64,
        /// Length in bytes.
        len: u64,
    },
}

struct Slot {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Dispatches port I/O exits to devices. Built before the vCPUs start, read-only after.
#[derive(Default)]
pub struct PioBus {
    slots: Vec<Slot>,
}

impl PioBus {
    /// Places `device` on ports `base..base+len`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), Error> {
        let end = u32::from(base) + u32::from(len);
        if len == 0
            || self.slots.iter().any(|s| {
                u32::from(base) < u32::from(s.base) + u32::from(s.len) && u32::from(s.base) < end
            })
        {
            return Err(Error::Overlap { base, len });
        }
        self.slots.push(Slot { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&Slot, u16)> {
        self.slots
            .iter()
            .find(|s| port >= s.base && u32::from(port) < u32::from(s.base) + u32::from(s.len))
            .map(|s| (s, port - s.base))
    }

    /// Guest `in` from `port`; returns false when no device is there.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
            Some((slot, offset)) => {
                lock(&slot.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Guest `out` to `port`; returns false when no device is there.
    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
            Some((slot, offset)) => {
                lock(&slot.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

struct MmioSlot {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn MmioDevice>>,
}

/// Dispatches MMIO exits to devices (virtio-mmio transports). Built before the vCPUs
/// start, read-only after.
#[derive(Default)]
pub struct MmioBus {
    slots: Vec<MmioSlot>,
}

impl MmioBus {
    /// Places `device` at `base..base+len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn MmioDevice>>,
    ) -> Result<(), Error> {
        let overlap = |end: u64| {
            self.slots
                .iter()
                .any(|s| base < s.base + s.len && s.base < end)
        };
        match base.checked_add(len) {
            Some(end) if len > 0 && !overlap(end) => {
                self.slots.push(MmioSlot { base, len, device });
                Ok(())
            }
            _ => Err(Error::MmioOverlap { base, len }),
        }
    }

    fn find(&self, addr: u64) -> Option<(&MmioSlot, u64)> {
        self.slots
            .iter()
            .find(|s| addr >= s.base && addr - s.base < s.len)
            .map(|s| (s, addr - s.base))
    }

    /// Guest load from `addr`; returns false when no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((slot, offset)) => {
                lock_mmio(&slot.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Guest store to `addr`; returns false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((slot, offset)) => {
                lock_mmio(&slot.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// The buses a vCPU dispatches its I/O exits to.
#[derive(Default)]
pub struct Buses {
    /// Port I/O.
    pub pio: PioBus,
    /// Memory-mapped I/O.
    pub mmio: MmioBus,
}

fn lock_mmio<'a>(
    device: &'a Mutex<dyn MmioDevice + 'static>,
) -> std::sync::MutexGuard<'a, dyn MmioDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks a device; a device whose lock was poisoned by a panicking vCPU thread is still
/// usable (its state is plain data), so the VMM keeps serving.
fn lock<'a>(
    device: &'a Mutex<dyn PioDevice + 'static>,
) -> std::sync::MutexGuard<'a, dyn PioDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u16, Vec<u8>)>);
    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_port_with_offsets() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(bus.write(0x3ff, &[9]));
        assert!(!bus.write(0x400, &[9]));
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![9])]);
    }

    #[derive(Default)]
    struct MmioRecorder(Vec<(u64, Vec<u8>)>);
    impl MmioDevice for MmioRecorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn mmio_bus_dispatches_by_address_and_refuses_overlaps() {
        let dev = Arc::new(Mutex::new(MmioRecorder::default()));
        let mut bus = MmioBus::default();
        bus.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        bus.insert(
            0xd000_1000,
            0x1000,
            Arc::new(Mutex::new(MmioRecorder::default())),
        )
        .unwrap();
        assert!(bus
            .insert(
                0xd000_0800,
                0x1000,
                Arc::new(Mutex::new(MmioRecorder::default()))
            )
            .is_err());
        assert!(bus
            .insert(u64::MAX, 2, Arc::new(Mutex::new(MmioRecorder::default())))
            .is_err());
        let mut b = [0u8; 4];
        assert!(bus.read(0xd000_0070, &mut b));
        assert_eq!(b, [0x70; 4]);
        assert!(bus.write(0xd000_0fff, &[1]));
        assert!(!bus.write(0xcfff_ffff, &[1]));
        assert!(!bus.read(u64::MAX, &mut b));
        assert_eq!(dev.lock().unwrap().0, vec![(0xfff, vec![1])]);
    }

    #[test]
    fn overlapping_or_empty_ranges_are_refused() {
        let mut bus = PioBus::default();
        bus.insert(0x60, 5, Arc::new(Mutex::new(Recorder::default())))
            .unwrap();
        assert!(bus
            .insert(0x64, 1, Arc::new(Mutex::new(Recorder::default())))
            .is_err());
        assert!(bus
            .insert(0x10, 0, Arc::new(Mutex::new(Recorder::default())))
            .is_err());
        assert!(bus
            .insert(0xffff, 1, Arc::new(Mutex::new(Recorder::default())))
            .is_ok());
    }
}
