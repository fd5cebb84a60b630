//! vCPU set-up (CPUID, MSRs, LAPIC, boot registers) and the vCPU threads.

pub mod cpuid;
pub mod kick;
pub mod regs;
pub mod vcpu;

use kvm_bindings::{kvm_lapic_state, CpuId};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemory;

/// Errors configuring a vCPU, naming the vCPU and the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {id}: {what} failed: {source}")]
    Kvm {
        /// vCPU index.
        id: u8,
        /// The ioctl.
        what: &'static str,
        /// Cause.
        source: kvm_ioctls::Error,
    },
    /// Boot structures could not be written.
    #[error(transparent)]
    Regs(#[from] regs::Error),
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &state.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in state.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as PC firmware leaves them.
pub fn set_lint(state: &mut kvm_lapic_state) {
    let with_mode = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(state, APIC_LVT0);
    set_lapic_reg(state, APIC_LVT0, with_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(state, APIC_LVT1);
    set_lapic_reg(state, APIC_LVT1, with_mode(lvt1, APIC_MODE_NMI));
}

/// Configures vCPU `topo.id`: CPUID from `supported`, boot MSRs, LAPIC LINTs and, for the
/// boot vCPU (`entry` is Some), 64-bit long-mode registers at `entry`. Application
/// processors stay in the wait-for-SIPI state KVM gives them.
pub fn configure_vcpu<M: GuestMemory>(
    fd: &VcpuFd,
    supported: &CpuId,
    topo: cpuid::CpuTopology,
    mem: &M,
    entry: Option<u64>,
) -> Result<(), Error> {
    let id = topo.id;
    let kvm = |what| move |source| Error::Kvm { id, what, source };
    let mut cpuid = supported.clone();
    cpuid::filter_cpuid(&mut cpuid, topo);
    fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
    let msrs = regs::boot_msrs()?;
    let written = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if written != msrs.as_slice().len() {
        return Err(Error::Kvm {
            id,
            what: "KVM_SET_MSRS (not every boot MSR was accepted)",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        });
    }
    let mut lapic = fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    set_lint(&mut lapic);
    fd.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    if let Some(entry) = entry {
        let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let sregs = regs::setup_long_mode(mem, sregs)?;
        fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&regs::boot_regs(entry))
            .map_err(kvm("KVM_SET_REGS"))?;
        fd.set_fpu(&regs::boot_fpu()).map_err(kvm("KVM_SET_FPU"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_modes_are_extint_and_nmi() {
        let mut s = kvm_lapic_state::default();
        set_lapic_reg(&mut s, APIC_LVT0, 0x0001_0700);
        set_lint(&mut s);
        assert_eq!(lapic_reg(&s, APIC_LVT0), 0x0001_0700);
        assert_eq!((lapic_reg(&s, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
        set_lapic_reg(&mut s, APIC_LVT0, 0);
        set_lint(&mut s);
        assert_eq!((lapic_reg(&s, APIC_LVT0) >> 8) & 7, APIC_MODE_EXTINT);
    }
}
