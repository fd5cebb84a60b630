//! ACPI tables for a hardware-reduced x86_64 micro-VM, built by the VMM (there is no firmware).
//!
//! The guest finds the RSDP through the zero page (`acpi_rsdp_addr`). Layout, all inside
//! `[ACPI_START, ACPI_END)` (reserved in the e820 map), each table 16-byte aligned:
//!
//! ```text
//! ACPI_START  RSDP (revision 2) -> XSDT
//!             DSDT  \_S5_ (poweroff), COM1, pvpanic, one LNRO0005 per virtio-mmio device
//!             FADT  hardware-reduced; sleep control/status and reset register = port 0x3c0; X_DSDT
//!             MADT  one local APIC per vCPU, one I/O APIC
//!             XSDT  -> FADT, MADT
//! ```
//!
//! Each table is built after the tables it points to, so it can be placed right after them.

mod dsdt;
mod fadt;
mod madt;
#[cfg(test)]
mod tests;

use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Where the RSDP is written; the other tables follow it.
pub const ACPI_START: u64 = 0x000e_0000;
/// End (exclusive) of the area the tables must fit in.
pub const ACPI_END: u64 = 0x0010_0000;
/// The FADT's sleep control register, sleep status register and reset register (8-bit I/O).
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// The FADT's RESET_VALUE: writing it to the reset register resets the machine.
pub const RESET_VALUE: u8 = 1;
/// SLP_TYP of S5 in the DSDT's `\_S5_` package.
pub const S5_SLEEP_TYPE: u8 = 5;
/// What the guest writes to the sleep control register to enter S5 (ACPI 6.5 §4.8.3.7):
/// SLP_TYP in bits 2..=4, SLP_EN in bit 5. Linux first writes 0x80 (clear WAK_STS) to the
/// sleep status register, the same port; the VMM must ignore that.
pub const S5_SLEEP_VALUE: u8 = (S5_SLEEP_TYPE << 2) | (1 << 5);
/// The QEMU-compatible pvpanic I/O port (ACPI device `QEMU0001`).
pub const PVPANIC_PORT: u16 = 0x505;
/// The COM1 UART the DSDT declares.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt: ISA IRQ 4, identity-mapped to GSI 4 (I/O APIC pin 4).
pub const COM1_GSI: u32 = 4;

/// A virtio-mmio device as the DSDT declares it (`LNRO0005`, the ACPI id Linux's
/// virtio_mmio driver matches): its register window and its GSI. Declared in ACPI, not on
/// the kernel command line, because with the hardware-reduced platform's null PIC Linux
/// numbers IRQs dynamically: `virtio_mmio.device=...:5` would name Linux IRQ 5, which is
/// not GSI 5; a `_CRS` Interrupt descriptor is mapped through the I/O APIC as COM1's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioAcpi {
    /// First byte of the register window (below 4 GiB).
    pub base: u32,
    /// Window size.
    pub len: u32,
    /// I/O APIC pin (edge-triggered, active high).
    pub gsi: u32,
}

/// OEM ID of every table.
const OEM_ID: [u8; 6] = *b"RUNV  ";
/// OEM revision of every table.
const OEM_REVISION: u32 = 1;
/// Alignment of each table.
const TABLE_ALIGN: u64 = 16;

/// Errors building or writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MADT needs at least one CPU.
    #[error("invalid vCPU count num_cpus={num_cpus}: the ACPI MADT needs at least one vCPU")]
    NoCpus {
        /// The count given.
        num_cpus: u8,
    },
    /// The tables do not fit below `ACPI_END`.
    #[error(
        "ACPI table {table} ({len} bytes at {addr:#x}) would end past the ACPI area end {ACPI_END:#x}"
    )]
    OutOfSpace {
        /// Signature of the table that did not fit.
        table: String,
        /// Where it would have started.
        addr: u64,
        /// Its size.
        len: usize,
    },
    /// Guest memory does not cover the ACPI area.
    #[error(
        "writing ACPI table {table} ({len} bytes) at guest address {addr:#x} failed: {source}"
    )]
    GuestMemory {
        /// Signature of the table.
        table: String,
        /// Where it was written.
        addr: u64,
        /// Its size.
        len: usize,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes RSDP, XSDT, FADT, DSDT and MADT into guest memory; returns the RSDP address.
pub fn create_acpi_tables<M: GuestMemory>(
    mem: &M,
    num_cpus: u8,
    virtio: &[VirtioMmioAcpi],
) -> Result<GuestAddress, Error> {
    for (addr, bytes) in build_tables(num_cpus, virtio)? {
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|source| Error::GuestMemory {
                table: signature(&bytes),
                addr,
                len: bytes.len(),
                source,
            })?;
    }
    Ok(GuestAddress(ACPI_START))
}

/// The tables' bytes and guest addresses, RSDP first (at `ACPI_START`).
pub fn build_tables(num_cpus: u8, virtio: &[VirtioMmioAcpi]) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    if num_cpus == 0 {
        return Err(Error::NoCpus { num_cpus });
    }
    let mut area = Area {
        next: align_up(ACPI_START + Rsdp::len() as u64),
        tables: Vec::with_capacity(5),
    };
    let dsdt_addr = area.place(dsdt::build(virtio))?;
    let fadt_addr = area.place(fadt::build(dsdt_addr))?;
    let madt_addr = area.place(madt::build(num_cpus))?;
    let mut xsdt = XSDT::new(OEM_ID, *b"RUNVXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = area.place(aml_bytes(&xsdt))?;

    let mut tables = area.tables;
    tables.insert(0, (ACPI_START, aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr))));
    Ok(tables)
}

/// Hands out addresses in the ACPI area, one table after the other.
struct Area {
    next: u64,
    tables: Vec<(u64, Vec<u8>)>,
}

impl Area {
    /// Places `table` at the next free aligned address and returns that address.
    fn place(&mut self, table: Vec<u8>) -> Result<u64, Error> {
        let addr = self.next;
        let end = addr
            .checked_add(table.len() as u64)
            .filter(|end| *end <= ACPI_END);
        let Some(end) = end else {
            return Err(Error::OutOfSpace {
                table: signature(&table),
                addr,
                len: table.len(),
            });
        };
        self.next = align_up(end);
        self.tables.push((addr, table));
        Ok(addr)
    }
}

fn align_up(addr: u64) -> u64 {
    addr.next_multiple_of(TABLE_ALIGN)
}

/// Serializes an acpi_tables object.
fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The table's signature for messages ("RSD PTR " for the RSDP).
fn signature(table: &[u8]) -> String {
    let sig = table.get(..8).filter(|s| s.starts_with(b"RSD PTR"));
    let sig = sig.or_else(|| table.get(..4)).unwrap_or(table);
    String::from_utf8_lossy(sig).trim_end().to_string()
}
