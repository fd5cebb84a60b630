//! Legacy devices on the port-I/O bus, and the bus itself.

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
