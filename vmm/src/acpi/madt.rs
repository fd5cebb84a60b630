//! MADT ("APIC"): one enabled local APIC per vCPU and KVM's in-kernel I/O APIC.
//!
//! Flags = 0: PCAT_COMPAT is clear. On a hardware-reduced platform Linux installs the null
//! legacy PIC whatever the flag says (arch/x86/kernel/acpi/boot.c), so the KVM 8259s are
//! never programmed; claiming a PC-AT dual 8259 the guest must mask would only describe
//! hardware the guest is not meant to use (Cloud Hypervisor and Firecracker leave it clear).
//!
//! No interrupt source overrides. With the null PIC, `nr_legacy_irqs()` is 0: Linux
//! fabricates no ISA IRQ 0-15 identity mappings and gives the I/O APIC dynamic IRQ numbers,
//! so an override would not bring back a usable "IRQ 4" anyway. Devices get their interrupt
//! as a GSI from their DSDT `_CRS` (COM1: extended Interrupt descriptor, GSI 4, edge,
//! active high, i.e. the ISA default), which needs no override. IRQ 0 -> GSI 2 (the PIT) is
//! not declared because hardware-reduced Linux does not use the PIT as a timer.

use super::{aml_bytes, OEM_ID, OEM_REVISION};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};

/// Local APIC MMIO base.
pub(super) const LAPIC_ADDR: u32 = 0xfee0_0000;
/// I/O APIC MMIO base (KVM's in-kernel I/O APIC).
pub(super) const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// I/O APIC ID: 0, what KVM's I/O APIC ID register holds after reset (x86_64 Linux keeps
/// I/O APIC and local APIC IDs apart, so sharing 0 with CPU 0 is fine; QEMU does the same).
pub(super) const IOAPIC_ID: u8 = 0;

/// The MADT for vCPUs `0..num_cpus`: ACPI processor UID = APIC ID = vCPU index.
pub(super) fn build(num_cpus: u8) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"RUNVAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for cpu in 0..num_cpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0));
    aml_bytes(&madt)
}
