//! How the guest ends the VM on purpose: the ACPI sleep-control/reset register of a
//! hardware-reduced ACPI machine (see `crate::acpi`), and the pvpanic port.

use super::BusDevice;
use crate::acpi::{RESET_VALUE, S5_SLEEP_VALUE};
use crate::exit::{ExitReason, ExitSender};

/// pvpanic event bit: the guest kernel panicked.
const PVPANIC_PANICKED: u8 = 1 << 0;

/// The FADT's sleep control/status and reset register.
pub struct AcpiPowerRegister(ExitSender);

impl AcpiPowerRegister {
    /// Reports poweroff and reset on `exits`.
    pub fn new(exits: ExitSender) -> Self {
        AcpiPowerRegister(exits)
    }
}

impl BusDevice<u16> for AcpiPowerRegister {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        // Sleep status: never woken.
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let reason = match (offset, data) {
            (0, [v]) if *v == S5_SLEEP_VALUE => ExitReason::PowerOff,
            (0, [v]) if *v == RESET_VALUE => ExitReason::Reset("ACPI reset register".into()),
            _ => return,
        };
        let _ = self.0.send(reason);
    }
}

/// QEMU-compatible pvpanic device (ACPI id QEMU0001, one I/O port).
pub struct PvPanic(ExitSender);

impl PvPanic {
    /// Reports a guest panic on `exits`.
    pub fn new(exits: ExitSender) -> Self {
        PvPanic(exits)
    }
}

impl BusDevice<u16> for PvPanic {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        // Capabilities: only "panicked" is reported (no crash-loaded event).
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = PVPANIC_PANICKED;
        }
    }

    fn write(&mut self, _offset: u16, data: &[u8]) {
        if data.first().is_some_and(|v| v & PVPANIC_PANICKED != 0) {
            let _ = self.0.send(ExitReason::Panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_value_resets() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reg = AcpiPowerRegister::new(tx);
        reg.write(0, &[S5_SLEEP_VALUE]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::PowerOff);
        reg.write(0, &[RESET_VALUE]);
        assert!(matches!(rx.try_recv().unwrap(), ExitReason::Reset(_)));
    }

    #[test]
    fn other_values_widths_and_offsets_are_ignored() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reg = AcpiPowerRegister::new(tx);
        reg.write(0, &[0x14]); // S5 without SLP_EN
        reg.write(0, &[S5_SLEEP_VALUE, 0]);
        reg.write(1, &[S5_SLEEP_VALUE]);
        reg.write(0, &[]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn pvpanic_reports_capabilities_and_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = PvPanic::new(tx);
        let mut b = [0u8; 1];
        dev.read(0, &mut b);
        assert_eq!(b[0], PVPANIC_PANICKED);
        dev.write(0, &[0]);
        assert!(rx.try_recv().is_err());
        dev.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::Panic);
    }
}
