//! Devices: legacy ones on the port-I/O bus, virtio-mmio on the MMIO bus, and the one
//! generic [`Bus`] both are.

pub mod i8042;
pub mod power;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex, MutexGuard};

/// A device on a bus with addresses of type `A`: [`PioBus`] (ports, `u16`) or [`MmioBus`]
/// (guest physical addresses, `u64`). `offset` is relative to the device's base.
/// Guest-controlled: any offset and length (1 to 8 bytes) must be handled without
/// panicking.
pub trait BusDevice<A>: Send {
    /// Guest `in` or load: fill `data`.
    fn read(&mut self, offset: A, data: &mut [u8]);
    /// Guest `out` or store.
    fn write(&mut self, offset: A, data: &[u8]);
}

/// An address type a [`Bus`] dispatches on.
pub trait BusAddress:
    Copy + Ord + Into<u64> + std::ops::Sub<Output = Self> + std::fmt::Debug + Send + 'static
{
    /// What the bus is called in errors: "port" or "MMIO".
    const BUS: &'static str;
}

impl BusAddress for u16 {
    const BUS: &'static str = "port";
}

impl BusAddress for u64 {
    const BUS: &'static str = "MMIO";
}

/// Errors of bus set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The range is empty, wraps, or overlaps a device already on the bus.
    #[error(
        "{bus} range {base:#x}+{len:#x} is empty, wraps or overlaps a device already on the bus"
    )]
    Overlap {
        /// "port" or "MMIO".
        bus: &'static str,
        /// Base address.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Slot<A> {
    base: A,
    len: A,
    device: Arc<Mutex<dyn BusDevice<A>>>,
}

/// Dispatches I/O exits to the devices on it, by address. Built before the vCPUs start,
/// read-only after.
pub struct Bus<A> {
    slots: Vec<Slot<A>>,
}

/// The port-I/O bus (legacy devices).
pub type PioBus = Bus<u16>;
/// The MMIO bus (virtio-mmio transports).
pub type MmioBus = Bus<u64>;

impl<A> Default for Bus<A> {
    fn default() -> Self {
        Bus { slots: Vec::new() }
    }
}

impl<A: BusAddress> Bus<A> {
    /// Places `device` at `base..base+len`; refuses an empty range, one that wraps the
    /// address space and one that overlaps a device already there.
    pub fn insert(
        &mut self,
        base: A,
        len: A,
        device: Arc<Mutex<dyn BusDevice<A>>>,
    ) -> Result<(), Error> {
        let (start, size) = (base.into(), len.into());
        let overlaps = |end: u64| {
            self.slots.iter().any(|s| {
                let s_start: u64 = s.base.into();
                start < s_start + s.len.into() && s_start < end
            })
        };
        match start.checked_add(size) {
            Some(end) if size > 0 && !overlaps(end) => {
                self.slots.push(Slot { base, len, device });
                Ok(())
            }
            _ => Err(Error::Overlap {
                bus: A::BUS,
                base: start,
                len: size,
            }),
        }
    }

    fn find(&self, addr: A) -> Option<(&Slot<A>, A)> {
        self.slots
            .iter()
            .find(|s| addr >= s.base && addr - s.base < s.len)
            .map(|s| (s, addr - s.base))
    }

    /// Guest read from `addr`; returns false when no device is there.
    pub fn read(&self, addr: A, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((slot, offset)) => {
                lock(&slot.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Guest write to `addr`; returns false when no device is there.
    pub fn write(&self, addr: A, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((slot, offset)) => {
                lock(&slot.device).write(offset, data);
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

/// Locks a device; a device whose lock was poisoned by a panicking vCPU thread is still
/// usable (its state is plain data), so the VMM keeps serving.
fn lock<'a, A>(
    device: &'a Mutex<dyn BusDevice<A> + 'static>,
) -> MutexGuard<'a, dyn BusDevice<A> + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads return the low byte of the offset; writes are recorded.
    struct Recorder<A>(Vec<(A, Vec<u8>)>);
    impl<A: BusAddress> BusDevice<A> for Recorder<A> {
        fn read(&mut self, offset: A, data: &mut [u8]) {
            data.fill(offset.into() as u8);
        }
        fn write(&mut self, offset: A, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    fn recorder<A: BusAddress>() -> Arc<Mutex<Recorder<A>>> {
        Arc::new(Mutex::new(Recorder(Vec::new())))
    }

    #[test]
    fn port_bus_dispatches_by_port_with_offsets() {
        let dev = recorder();
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
    fn mmio_bus_dispatches_by_address_and_refuses_overlaps() {
        let dev = recorder();
        let mut bus = MmioBus::default();
        bus.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        bus.insert(0xd000_1000, 0x1000, recorder()).unwrap();
        let e = bus.insert(0xd000_0800, 0x1000, recorder()).unwrap_err();
        assert!(
            e.to_string().contains("MMIO range 0xd0000800+0x1000"),
            "{e}"
        );
        assert!(bus.insert(u64::MAX, 2, recorder()).is_err(), "wraps");
        let mut b = [0u8; 4];
        assert!(bus.read(0xd000_0070, &mut b));
        assert_eq!(b, [0x70; 4]);
        assert!(bus.write(0xd000_0fff, &[1]));
        assert!(!bus.write(0xcfff_ffff, &[1]));
        assert!(!bus.read(u64::MAX, &mut b));
        assert_eq!(dev.lock().unwrap().0, vec![(0xfff, vec![1])]);
    }

    #[test]
    fn overlapping_or_empty_port_ranges_are_refused() {
        let mut bus = PioBus::default();
        bus.insert(0x60, 5, recorder()).unwrap();
        let e = bus.insert(0x64, 1, recorder()).unwrap_err();
        assert!(e.to_string().contains("port range 0x64+0x1"), "{e}");
        assert!(bus.insert(0x10, 0, recorder()).is_err());
        // The last port is a range of its own, however its length runs past 0xffff.
        bus.insert(0xffff, 1, recorder()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0xffff, &mut b));
        assert_eq!(b, [0]);
    }
}
