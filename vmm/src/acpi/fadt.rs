//! FADT ("FACP"): a hardware-reduced ACPI platform whose only fixed hardware is the sleep
//! control/status register and the reset register, all at `SLEEP_CONTROL_PORT`.

use super::{aml_bytes, OEM_ID, OEM_REVISION, RESET_VALUE, SLEEP_CONTROL_PORT};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

/// IAPC_BOOT_ARCH bit 2: "VGA Not Present"; tells Linux not to probe VGA ports.
pub(super) const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IAPC_BOOT_ARCH bit 5: "CMOS RTC Not Present" (ACPI 5.0+); the VMM emulates no RTC, so
/// Linux does not register the rtc_cmos platform device (wall time comes from kvm-clock).
pub(super) const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// IA-PC boot architecture flags. Deliberately clear:
/// - bit 0 LEGACY_DEVICES: on x86 Linux it only gates PnP BIOS probing; COM1 is in the DSDT.
/// - bit 1 8042: the VMM's i8042 only understands the reset command (0xFE to port 0x64),
///   which `reboot=k` writes without looking for a controller. With the bit clear (and no
///   PNP0303 in the DSDT) the i8042 driver finds "no PS/2 controller" and does not probe
///   the ports; setting it would make the driver self-test a controller that never answers.
/// - bit 3 MSI Not Supported: it only disables PCI MSI; there is no PCI.
/// - bit 4 PCIe ASPM Controls: no PCIe.
pub(super) const IAPC_BOOT_ARCH: u16 = IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT;

/// "RUNVKVM " in the FADT's hypervisor vendor identity field.
const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"RUNVKVM ";

/// The FADT pointing at the DSDT at `dsdt_addr` (64-bit X_DSDT; the 32-bit DSDT field is 0).
pub(super) fn build(dsdt_addr: u64) -> Vec<u8> {
    // HW_REDUCED_ACPI: no PM1/GPE blocks, no SCI, no FACS; Linux uses the null legacy PIC
    // and takes S5 from the sleep registers below. RESET_REG_SUP: the reset register is
    // valid. PWR_BUTTON/SLP_BUTTON set = no fixed-feature buttons (a power button, if ever
    // added, is a PNP0C0C device behind a GED).
    let mut fadt = FADTBuilder::new(OEM_ID, *b"RUNVFACP", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = io_port_u8(SLEEP_CONTROL_PORT);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io_port_u8(SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = io_port_u8(SLEEP_CONTROL_PORT);
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    aml_bytes(&fadt.finalize())
}

/// An 8-bit register in I/O port space.
fn io_port_u8(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}
