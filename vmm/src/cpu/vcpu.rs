//! One vCPU thread with an explicit state machine:
//!
//! ```text
//! Created --Start--> Running --(guest ends the VM | error | Stop)--> Stopped
//!    \-----------------------------Stop---------------------------------/
//! ```
//! The VMM talks to it over a channel and kicks it out of KVM_RUN with one signal
//! ([`super::kick`]: the signal sets `kvm_run.immediate_exit`, so it is not lost even when
//! it lands just before KVM_RUN); the vCPU reports how the VM ended on the shared exit
//! channel. Exit handling is the plain function
//! [`handle_exit`], which tests call directly.

use super::kick::{self, Armed};
use crate::devices::Buses;
use crate::exit::{ExitReason, ExitSender};
use crate::ratelimit::LogLimiter;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

/// KVM_SYSTEM_EVENT_* types (linux/kvm.h).
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// What the VMM tells a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuEvent {
    /// Enter the guest.
    Start,
    /// Leave the guest and end the thread.
    Stop,
}

/// Where a vCPU thread is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    /// Configured, waiting for Start.
    Created,
    /// In the KVM_RUN loop.
    Running,
    /// Done; the thread ends.
    Stopped,
}

/// What the run loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the guest.
    Continue,
    /// The VM is over.
    Stop(ExitReason),
}

/// Handles one KVM exit of vCPU `id`. Guest-controlled: never panics; unknown ports and
/// addresses read as all-ones and ignore writes, with rate-limited logs.
pub fn handle_exit(id: u8, exit: VcpuExit<'_>, bus: &Buses, limiter: &mut LogLimiter) -> Action {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !bus.pio.read(port, data) {
                data.fill(0xff);
                if limiter.allow() {
                    tracing::debug!("vCPU {id}: in from unhandled port {port:#x}");
                }
            }
            Action::Continue
        }
        VcpuExit::IoOut(port, data) => {
            if !bus.pio.write(port, data) && limiter.allow() {
                tracing::debug!("vCPU {id}: out {data:x?} to unhandled port {port:#x}");
            }
            Action::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            if !bus.mmio.read(addr, data) {
                data.fill(0xff);
                if limiter.allow() {
                    tracing::debug!("vCPU {id}: read from unhandled MMIO address {addr:#x}");
                }
            }
            Action::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !bus.mmio.write(addr, data) && limiter.allow() {
                tracing::debug!("vCPU {id}: write to unhandled MMIO address {addr:#x}");
            }
            Action::Continue
        }
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => Action::Continue,
        VcpuExit::Shutdown => Action::Stop(ExitReason::Reset(format!(
            "triple fault or shutdown on vCPU {id}"
        ))),
        VcpuExit::SystemEvent(kind, _) => Action::Stop(match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
            KVM_SYSTEM_EVENT_RESET => ExitReason::Reset(format!("KVM reset event on vCPU {id}")),
            KVM_SYSTEM_EVENT_CRASH => ExitReason::Panic,
            other => ExitReason::Error(format!("unknown KVM system event {other} on vCPU {id}")),
        }),
        VcpuExit::Hlt => Action::Stop(ExitReason::Error(format!(
            "vCPU {id} halted outside the in-kernel LAPIC"
        ))),
        VcpuExit::FailEntry(reason, cpu) => Action::Stop(ExitReason::Error(format!(
            "KVM could not enter the guest on vCPU {id} (host cpu {cpu}): hardware entry failure reason {reason:#x}"
        ))),
        VcpuExit::InternalError => Action::Stop(ExitReason::Error(format!(
            "KVM internal error on vCPU {id} (the host KVM could not emulate a guest instruction)"
        ))),
        other => Action::Stop(ExitReason::Error(format!(
            "unexpected KVM exit on vCPU {id}: {other:?}"
        ))),
    }
}

/// A vCPU and what its thread needs.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    bus: Arc<Buses>,
    exits: ExitSender,
    state: VcpuState,
    limiter: LogLimiter,
}

impl Vcpu {
    /// Wraps a configured vCPU.
    pub fn new(id: u8, fd: VcpuFd, bus: Arc<Buses>, exits: ExitSender) -> Self {
        Vcpu {
            id,
            fd,
            bus,
            exits,
            state: VcpuState::Created,
            limiter: LogLimiter::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> VcpuState {
        self.state
    }

    /// The thread body: drives the state machine until Stopped. A kick (see
    /// [`super::kick`]) received on this thread while it runs makes KVM_RUN return at once.
    pub fn run(mut self, events: Receiver<VcpuEvent>) {
        let immediate_exit = std::ptr::addr_of_mut!(self.fd.get_kvm_run().immediate_exit);
        // SAFETY: the byte is inside the kvm_run page of `self.fd`, mapped for as long as
        // the fd lives; `self` (and so the fd) outlives `armed`, which is dropped at the
        // end of this function on this thread, before `self`.
        let armed = unsafe { kick::arm(immediate_exit) };
        while self.state != VcpuState::Stopped {
            self.state = self.step(&events, &armed);
        }
    }

    fn step(&mut self, events: &Receiver<VcpuEvent>, armed: &Armed) -> VcpuState {
        match self.state {
            VcpuState::Created => match events.recv() {
                Ok(VcpuEvent::Start) => VcpuState::Running,
                Ok(VcpuEvent::Stop) | Err(_) => VcpuState::Stopped,
            },
            VcpuState::Running => {
                match events.try_recv() {
                    Ok(VcpuEvent::Stop) | Err(TryRecvError::Disconnected) => {
                        return VcpuState::Stopped
                    }
                    Ok(VcpuEvent::Start) | Err(TryRecvError::Empty) => {}
                }
                match self.run_once(armed) {
                    Action::Continue => VcpuState::Running,
                    Action::Stop(reason) => {
                        let _ = self.exits.send(reason);
                        VcpuState::Stopped
                    }
                }
            }
            VcpuState::Stopped => VcpuState::Stopped,
        }
    }

    fn run_once(&mut self, armed: &Armed) -> Action {
        let id = self.id;
        let mut internal_error = false;
        let action = match self.fd.run() {
            Ok(exit) => {
                internal_error = matches!(exit, VcpuExit::InternalError);
                handle_exit(id, exit, &self.bus, &mut self.limiter)
            }
            // A kick from the VMM (or any signal): re-arm KVM_RUN, then look at the event
            // channel again.
            Err(e) if e.errno() == libc::EINTR => {
                armed.clear();
                Action::Continue
            }
            Err(e) if e.errno() == libc::EAGAIN => Action::Continue,
            Err(e) => Action::Stop(ExitReason::Error(format!(
                "KVM_RUN failed on vCPU {id}: {e}"
            ))),
        };
        match action {
            // KVM's own account of the failure is in kvm_run, readable once the exit is handled.
            Action::Stop(ExitReason::Error(msg)) if internal_error => {
                let detail = self.internal_error_detail();
                Action::Stop(ExitReason::Error(format!("{msg}; {detail}")))
            }
            action => action,
        }
    }

    fn internal_error_detail(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled in; it is plain data.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or_default();
        format!(
            "suberror {} at rip {rip:#x}, data {:x?}",
            internal.suberror,
            &internal.data[..n]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::power::AcpiPowerRegister;
    use std::sync::Mutex;

    fn bus_with_power() -> (Buses, std::sync::mpsc::Receiver<ExitReason>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut bus = Buses::default();
        bus.pio
            .insert(0x3c0, 1, Arc::new(Mutex::new(AcpiPowerRegister::new(tx))))
            .unwrap();
        (bus, rx)
    }

    #[test]
    fn unhandled_port_reads_all_ones() {
        let (bus, _rx) = bus_with_power();
        let mut data = [0u8; 2];
        let a = handle_exit(
            0,
            VcpuExit::IoIn(0x80, &mut data),
            &bus,
            &mut LogLimiter::new(),
        );
        assert_eq!(a, Action::Continue);
        assert_eq!(data, [0xff, 0xff]);
    }

    #[test]
    fn port_writes_reach_devices() {
        let (bus, rx) = bus_with_power();
        let a = handle_exit(
            0,
            VcpuExit::IoOut(0x3c0, &[crate::acpi::S5_SLEEP_VALUE]),
            &bus,
            &mut LogLimiter::new(),
        );
        assert_eq!(a, Action::Continue);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::PowerOff);
    }

    #[test]
    fn unhandled_mmio_is_survivable() {
        let (bus, _rx) = bus_with_power();
        let mut l = LogLimiter::new();
        let mut data = [0u8; 8];
        for _ in 0..1000 {
            assert_eq!(
                handle_exit(1, VcpuExit::MmioRead(0xd000_0000, &mut data), &bus, &mut l),
                Action::Continue
            );
            assert_eq!(
                handle_exit(1, VcpuExit::MmioWrite(u64::MAX, &data), &bus, &mut l),
                Action::Continue
            );
        }
        assert_eq!(data, [0xff; 8]);
    }

    #[test]
    fn mmio_exits_reach_the_mmio_bus() {
        struct Echo(u8);
        impl crate::devices::BusDevice<u64> for Echo {
            fn read(&mut self, _: u64, data: &mut [u8]) {
                data.fill(self.0);
            }
            fn write(&mut self, _: u64, data: &[u8]) {
                self.0 = data[0];
            }
        }
        let (mut bus, _rx) = bus_with_power();
        bus.mmio
            .insert(0xd000_0000, 0x1000, Arc::new(Mutex::new(Echo(0))))
            .unwrap();
        let mut l = LogLimiter::new();
        let a = handle_exit(0, VcpuExit::MmioWrite(0xd000_0070, &[7]), &bus, &mut l);
        assert_eq!(a, Action::Continue);
        let mut data = [0u8; 4];
        handle_exit(0, VcpuExit::MmioRead(0xd000_0000, &mut data), &bus, &mut l);
        assert_eq!(data, [7; 4]);
    }

    #[test]
    fn shutdown_and_system_events_end_the_vm() {
        let (bus, _rx) = bus_with_power();
        let mut l = LogLimiter::new();
        match handle_exit(2, VcpuExit::Shutdown, &bus, &mut l) {
            Action::Stop(ExitReason::Reset(how)) => assert!(how.contains("vCPU 2")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            handle_exit(0, VcpuExit::SystemEvent(1, &[]), &bus, &mut l),
            Action::Stop(ExitReason::PowerOff)
        );
        assert_eq!(
            handle_exit(0, VcpuExit::SystemEvent(3, &[]), &bus, &mut l),
            Action::Stop(ExitReason::Panic)
        );
        assert!(matches!(
            handle_exit(0, VcpuExit::FailEntry(0x80000021, 1), &bus, &mut l),
            Action::Stop(ExitReason::Error(m)) if m.contains("0x80000021")
        ));
    }
}
