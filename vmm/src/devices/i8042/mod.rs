//! The i8042 keyboard controller, only so that the guest can reset the machine with the
//! 0xFE command (`reboot=k`); vm-superio emulates it.

use super::BusDevice;
use crate::exit::{ExitReason, ExitSender};
use vm_superio::{I8042Device, Trigger};

/// First port of the controller (data port 0x60; command/status is 0x64 = offset 4).
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u16 = 5;

/// Reports a guest reset to the VMM.
pub struct ResetTrigger(ExitSender);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        // The receiver is gone only when the VM is already stopping.
        let _ = self.0.send(ExitReason::Reset("i8042 reset command".into()));
        Ok(())
    }
}

/// The controller on the port-I/O bus.
pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    /// A controller that reports resets on `exits`.
    pub fn new(exits: ExitSender) -> Self {
        I8042(I8042Device::new(ResetTrigger(exits)))
    }
}

impl BusDevice<u16> for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.0.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // The trigger cannot fail.
            let _ = self.0.write(off, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reports_a_reset() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = I8042::new(tx);
        dev.write(4, &[0xfe]);
        assert_eq!(
            rx.try_recv().unwrap(),
            ExitReason::Reset("i8042 reset command".into())
        );
    }

    #[test]
    fn other_commands_do_not_reset() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = I8042::new(tx);
        dev.write(4, &[0xaa]);
        dev.write(0, &[0x12]);
        dev.write(700, &[0xfe]);
        let mut b = [0u8; 1];
        dev.read(4, &mut b);
        assert!(rx.try_recv().is_err());
    }
}
