//! Checks of the table bytes against the ACPI 6.5 layouts (offsets from the spec, not from
//! acpi_tables), and of writing them into guest memory.

use super::*;
use vm_memory::GuestMemoryMmap;

const RSDP_LEN: usize = 36;
const HEADER_LEN: usize = 36;

fn tables(num_cpus: u8) -> Vec<(u64, Vec<u8>)> {
    build_tables(num_cpus, &[]).expect("tables build")
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// The table that starts at `addr`, checked to be as long as its header says.
fn table_at(tables: &[(u64, Vec<u8>)], addr: u64) -> &[u8] {
    let (_, bytes) = tables
        .iter()
        .find(|(a, _)| *a == addr)
        .unwrap_or_else(|| panic!("no table at {addr:#x}"));
    assert_eq!(u32_at(bytes, 4) as usize, bytes.len(), "length field");
    bytes
}

fn rsdp(tables: &[(u64, Vec<u8>)]) -> &[u8] {
    assert_eq!(tables[0].0, ACPI_START);
    &tables[0].1
}

fn xsdt_entries(tables: &[(u64, Vec<u8>)]) -> Vec<u64> {
    let xsdt = table_at(tables, u64_at(rsdp(tables), 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    xsdt[HEADER_LEN..]
        .chunks(8)
        .map(|e| u64::from_le_bytes(e.try_into().unwrap()))
        .collect()
}

/// The table with `sig`, found through RSDP -> XSDT (-> FADT for the DSDT).
fn find<'a>(tables: &'a [(u64, Vec<u8>)], sig: &[u8; 4]) -> &'a [u8] {
    let entries = xsdt_entries(tables);
    let listed = entries.iter().map(|a| table_at(tables, *a));
    if let Some(t) = listed.clone().find(|t| &t[..4] == sig) {
        return t;
    }
    assert_eq!(sig, b"DSDT");
    let fadt = listed.clone().find(|t| &t[..4] == b"FACP").unwrap();
    table_at(tables, u64_at(fadt, 140))
}

/// MADT interrupt controller structures as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < madt.len() {
        let len = madt[off + 1] as usize;
        assert!(
            len >= 2 && off + len <= madt.len(),
            "bad MADT entry at {off}"
        );
        out.push((madt[off], &madt[off..off + len]));
        off += len;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_table_checksum_is_zero() {
    for n in [1, 2, 8, 255] {
        let tables = tables(n);
        assert_eq!(tables.len(), 5);
        let rsdp = rsdp(&tables);
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP 20-byte checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        for (addr, bytes) in &tables[1..] {
            assert_eq!(sum(bytes), 0, "checksum of table at {addr:#x}");
        }
    }
}

#[test]
fn rsdp_points_to_xsdt_listing_fadt_and_madt() {
    let tables = tables(2);
    let rsdp = rsdp(&tables);
    assert_eq!(rsdp.len(), RSDP_LEN);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(&rsdp[9..15], b"RUNV  ");
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
    assert_eq!(u32_at(rsdp, 20) as usize, RSDP_LEN);

    let entries = xsdt_entries(&tables);
    let sigs: Vec<&[u8]> = entries
        .iter()
        .map(|a| &table_at(&tables, *a)[..4])
        .collect();
    assert_eq!(sigs, [b"FACP", b"APIC"]);
    for (_, t) in &tables[1..] {
        assert_eq!(&t[10..16], b"RUNV  ", "OEM id of {:?}", &t[..4]);
    }
}

#[test]
fn fadt_x_dsdt_points_to_dsdt() {
    let tables = tables(1);
    let fadt = find(&tables, b"FACP");
    assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT unused");
    assert_eq!(&table_at(&tables, u64_at(fadt, 140))[..4], b"DSDT");
}

#[test]
fn fadt_is_hardware_reduced_with_io_port_sleep_and_reset_registers() {
    let tables = tables(1);
    let fadt = find(&tables, b"FACP");
    assert_eq!(fadt.len(), 276, "ACPI 6.x FADT");
    assert_eq!(fadt[8], 6, "major revision");

    let flags = u32_at(fadt, 112);
    for (bit, name) in [(20, "HW_REDUCED_ACPI"), (10, "RESET_REG_SUP")] {
        assert_ne!(flags & (1 << bit), 0, "{name} set");
    }
    for (bit, name) in [(4, "PWR_BUTTON"), (5, "SLP_BUTTON")] {
        assert_ne!(flags & (1 << bit), 0, "{name} set: no fixed-feature button");
    }

    let iapc = u16_at(fadt, 109);
    assert_ne!(iapc & (1 << 2), 0, "VGA not present");
    assert_eq!(iapc & (1 << 1), 0, "8042 bit clear");
    assert_eq!(iapc & (1 << 3), 0, "MSI not disabled");

    // GAS: space id, bit width, bit offset, access size, address.
    let io_byte_at_3c0 = [1u8, 8, 0, 1, 0xc0, 0x03, 0, 0, 0, 0, 0, 0];
    for (off, name) in [
        (116, "RESET_REG"),
        (244, "SLEEP_CONTROL_REG"),
        (256, "SLEEP_STATUS_REG"),
    ] {
        assert_eq!(fadt[off..off + 12], io_byte_at_3c0, "{name}");
    }
    assert_eq!(fadt[128], RESET_VALUE);
}

#[test]
fn s5_sleep_value_is_slp_typ_5_with_slp_en() {
    assert_eq!(S5_SLEEP_VALUE, 0x34);
}

#[test]
fn madt_has_one_enabled_lapic_per_cpu_and_one_ioapic() {
    for n in [1u8, 2, 8, 255] {
        let tables = tables(n);
        let madt = find(&tables, b"APIC");
        assert_eq!(u32_at(madt, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(madt, 40), 0, "flags: PCAT_COMPAT clear");

        let entries = madt_entries(madt);
        let lapics: Vec<&[u8]> = entries.iter().filter(|e| e.0 == 0).map(|e| e.1).collect();
        assert_eq!(lapics.len(), usize::from(n), "LAPICs for {n} vCPUs");
        for (i, lapic) in lapics.iter().enumerate() {
            assert_eq!(lapic.len(), 8);
            assert_eq!(usize::from(lapic[2]), i, "processor UID");
            assert_eq!(usize::from(lapic[3]), i, "APIC ID");
            assert_eq!(u32_at(lapic, 4), 1, "enabled");
        }

        let ioapics: Vec<&[u8]> = entries.iter().filter(|e| e.0 == 1).map(|e| e.1).collect();
        assert_eq!(ioapics.len(), 1);
        let ioapic = ioapics[0];
        assert_eq!(ioapic.len(), 12);
        assert_eq!(ioapic[2], 0, "I/O APIC ID");
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
        assert_eq!(u32_at(ioapic, 8), 0, "GSI base");
        assert_eq!(
            entries.len(),
            usize::from(n) + 1,
            "nothing else (no overrides)"
        );
    }
}

#[test]
fn dsdt_declares_s5_com1_and_pvpanic() {
    let tables = tables(1);
    let dsdt = find(&tables, b"DSDT");
    assert!(dsdt[8] >= 2, "64-bit AML integers");

    // Name (_S5, Package (4) { 5, Zero, Zero, Zero })
    let s5 = [
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00,
    ];
    assert!(contains(dsdt, &s5), "_S5_ package");

    // Name (_HID, "QEMU0001") and IO (Decode16, 0x505, 0x505, 1, 1)
    let mut hid = vec![0x08, b'_', b'H', b'I', b'D', 0x0d];
    hid.extend_from_slice(b"QEMU0001\0");
    assert!(contains(dsdt, &hid), "pvpanic _HID");
    assert!(contains(
        dsdt,
        &[0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01]
    ));
    assert!(contains(dsdt, b"PEVT"));

    // Name (_HID, EisaId ("PNP0501")), IO (Decode16, 0x3f8, 0x3f8, 1, 8) and
    // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
    let com1_hid = [0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01];
    assert!(contains(dsdt, &com1_hid), "COM1 _HID");
    assert!(contains(
        dsdt,
        &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
    ));
    assert!(contains(
        dsdt,
        &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00]
    ));

    // Scope (\_SB)
    assert!(contains(dsdt, b"\\_SB_"));
}

#[test]
fn tables_fit_the_acpi_area_without_overlapping() {
    for n in [1, 8, 255] {
        let mut spans: Vec<(u64, u64)> = tables(n)
            .iter()
            .map(|(a, b)| (*a, a + b.len() as u64))
            .collect();
        spans.sort_unstable();
        assert_eq!(spans[0].0, ACPI_START);
        assert!(spans.last().unwrap().1 <= ACPI_END);
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
    }
}

#[test]
fn a_table_past_acpi_end_is_an_error_naming_it() {
    let mut area = Area {
        next: ACPI_END - 16,
        tables: Vec::new(),
    };
    let mut table = b"TEST".to_vec();
    table.resize(32, 0);
    let err = area.place(table).unwrap_err();
    assert!(matches!(&err, Error::OutOfSpace { len: 32, .. }));
    assert!(err.to_string().contains("TEST"), "{err}");
    assert!(area.tables.is_empty());
}

#[test]
fn zero_cpus_is_an_error_naming_the_input() {
    let err = build_tables(0, &[]).unwrap_err();
    assert!(matches!(err, Error::NoCpus { num_cpus: 0 }));
    assert!(err.to_string().contains("num_cpus=0"), "{err}");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
    assert!(matches!(
        create_acpi_tables(&mem, 0, &[]),
        Err(Error::NoCpus { .. })
    ));
}

#[test]
fn create_acpi_tables_writes_rsdp_at_acpi_start() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
    let rsdp_addr = create_acpi_tables(&mem, 4, &[]).unwrap();
    assert_eq!(rsdp_addr, GuestAddress(ACPI_START));
    for (addr, bytes) in tables(4) {
        let mut read = vec![0u8; bytes.len()];
        mem.read_slice(&mut read, GuestAddress(addr)).unwrap();
        assert_eq!(read, bytes, "table at {addr:#x}");
    }
    let mut sig = [0u8; 8];
    mem.read_slice(&mut sig, rsdp_addr).unwrap();
    assert_eq!(&sig, b"RSD PTR ");
}

#[test]
fn memory_without_the_acpi_area_is_an_error_naming_the_table() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    let err = create_acpi_tables(&mem, 1, &[]).unwrap_err();
    assert!(matches!(&err, Error::GuestMemory { addr, .. } if *addr == ACPI_START));
    assert!(err.to_string().contains("RSD PTR"), "{err}");
}

#[test]
fn dsdt_declares_each_virtio_mmio_device_with_its_window_and_gsi() {
    let devs = [
        VirtioMmioAcpi {
            base: 0xd000_0000,
            len: 0x1000,
            gsi: 5,
        },
        VirtioMmioAcpi {
            base: 0xd000_1000,
            len: 0x1000,
            gsi: 6,
        },
    ];
    let tables = build_tables(1, &devs).unwrap();
    let dsdt = find(&tables, b"DSDT");
    assert!(contains(dsdt, b"LNRO0005"));
    assert!(contains(dsdt, b"V000") && contains(dsdt, b"V001"));
    // Memory32Fixed: tag 0x86, length 9, read-write, base, length.
    let mut mem = vec![0x86, 0x09, 0x00, 0x01];
    mem.extend_from_slice(&0xd000_1000u32.to_le_bytes());
    mem.extend_from_slice(&0x1000u32.to_le_bytes());
    assert!(contains(dsdt, &mem));
    // Extended interrupt descriptor: consumer, edge, active high, exclusive; one GSI.
    let mut irq = vec![0x89, 0x06, 0x00, 0x03, 0x01];
    irq.extend_from_slice(&6u32.to_le_bytes());
    assert!(contains(dsdt, &irq));
}
