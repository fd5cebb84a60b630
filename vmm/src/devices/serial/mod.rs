//! The 8250 UART at COM1 (0x3f8, IRQ 4): vm-superio's emulation, its interrupt delivered
//! through a KVM irqfd, its output to the VMM's console.

use super::PioDevice;
use std::io::{self, Write};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 ports.
pub const COM1_LEN: u16 = 8;
/// COM1 interrupt line (ISA IRQ 4 = GSI 4).
pub const COM1_GSI: u32 = 4;

/// Raises the UART interrupt by writing the irqfd registered for its GSI.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Console output: buffered per line, since the UART flushes after every byte and a
/// syscall per byte would double the cost of each guest `outb`.
pub struct ConsoleOut {
    inner: Option<Box<dyn Write + Send>>,
    line: Vec<u8>,
}

impl ConsoleOut {
    /// Output to `inner`, or discarded with `None`.
    pub fn new(inner: Option<Box<dyn Write + Send>>) -> Self {
        ConsoleOut {
            inner,
            line: Vec::with_capacity(256),
        }
    }

    /// Writes out what is buffered, complete line or not.
    pub fn flush_all(&mut self) -> io::Result<()> {
        if let Some(out) = self.inner.as_mut() {
            out.write_all(&self.line)?;
            out.flush()?;
        }
        self.line.clear();
        Ok(())
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.inner.is_none() {
            return Ok(buf.len());
        }
        self.line.extend_from_slice(buf);
        if buf.contains(&b'\n') || self.line.len() >= 4096 {
            self.flush_all()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Called by the UART after each byte: lines are flushed as they complete instead.
        Ok(())
    }
}

/// COM1 on the port-I/O bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOut>,
    errors: crate::ratelimit::LogLimiter,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        SerialDevice {
            uart: Serial::new(IrqTrigger(irq), out),
            errors: crate::ratelimit::LogLimiter::new(),
        }
    }

    /// Flushes console output still buffered (at VM exit).
    pub fn flush(&mut self) -> io::Result<()> {
        self.uart.writer_mut().flush_all()
    }
}

impl PioDevice for SerialDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.uart.write(off, value) {
            if self.errors.allow() {
                tracing::warn!("serial console: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_is_written_per_line() {
        let sink = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, ConsoleOut::new(Some(Box::new(sink.clone()))));
        for b in b"hi" {
            dev.write(0, &[*b]);
        }
        assert!(sink.0.lock().unwrap().is_empty());
        dev.write(0, b"\n");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        dev.write(0, b"x");
        dev.flush().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\nx");
    }

    #[test]
    fn odd_offsets_and_empty_accesses_do_not_panic() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, ConsoleOut::new(None));
        dev.write(0x1234, &[1]);
        dev.write(0, &[]);
        let mut empty = [];
        dev.read(3, &mut empty);
        let mut wide = [0xffu8; 4];
        dev.read(5, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
    }

    #[test]
    fn enabling_the_transmit_interrupt_raises_the_irq() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let mut dev = SerialDevice::new(irq, ConsoleOut::new(None));
        dev.write(1, &[0x02]); // IER: THR empty interrupt
        assert_eq!(probe.read().unwrap(), 1);
    }
}
