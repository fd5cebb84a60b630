//! The 8250 UART at COM1 (0x3f8, IRQ 4): vm-superio's emulation, its interrupt delivered
//! through a KVM irqfd, its output to the VMM's console.

use super::BusDevice;
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
    /// At most this many bytes of guest output are written (`--console-limit`); then one
    /// notice, and the rest is discarded: a guest cannot fill the host's disk through its
    /// console.
    limit: Option<u64>,
    written: u64,
}

impl ConsoleOut {
    /// Output to `inner`, or discarded with `None`.
    pub fn new(inner: Option<Box<dyn Write + Send>>) -> Self {
        ConsoleOut {
            inner,
            line: Vec::with_capacity(256),
            limit: None,
            written: 0,
        }
    }

    /// Writes at most `limit` bytes of guest output.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Writes out what is buffered, complete line or not.
    pub fn flush_all(&mut self) -> io::Result<()> {
        let Some(out) = self.inner.as_mut() else {
            self.line.clear();
            return Ok(());
        };
        let room = self
            .limit
            .map_or(u64::MAX, |l| l.saturating_sub(self.written));
        let n = self
            .line
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        out.write_all(&self.line[..n])?;
        self.written += n as u64;
        if n < self.line.len() {
            let limit = self.limit.unwrap_or_default();
            writeln!(
                out,
                "\n[runv-vmm: the console reached its limit of {limit} bytes; the rest of the guest's output is discarded]"
            )?;
            tracing::warn!(
                limit,
                "the guest's console output reached its limit; discarding the rest"
            );
            // Nothing more is written.
            self.inner = None;
        }
        if let Some(out) = self.inner.as_mut() {
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

impl BusDevice<u16> for SerialDevice {
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
    fn output_past_the_limit_is_cut_with_one_notice() {
        let sink = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = ConsoleOut::new(Some(Box::new(sink.clone()))).with_limit(Some(10));
        let mut dev = SerialDevice::new(irq, out);
        for b in b"12345\n67890abc\nflood flood flood\n"
            .iter()
            .cycle()
            .take(100_000)
        {
            dev.write(0, &[*b]);
        }
        dev.flush().unwrap();
        let got = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            got.starts_with("12345\n6789\n[runv-vmm: the console reached its limit of 10 bytes;"),
            "{got}"
        );
        assert_eq!(got.matches("runv-vmm").count(), 1, "one notice: {got}");
        assert!(got.len() < 200, "{got}");
    }

    #[test]
    fn without_a_limit_everything_is_written() {
        let sink = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, ConsoleOut::new(Some(Box::new(sink.clone()))));
        for b in b"0123456789\n".iter().cycle().take(110_000) {
            dev.write(0, &[*b]);
        }
        assert_eq!(sink.0.lock().unwrap().len(), 110_000);
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
