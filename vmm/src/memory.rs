//! Guest physical memory: the x86_64 layout of a runv micro-VM and the guest RAM itself.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA, then boot structures (GDT, zero page, page tables)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA .. 0x0010_0000: reserved (ACPI tables at 0xe_0000)
//! 0x0010_0000  RAM (an ELF vmlinux loads itself at its physical address, usually 16 MiB)
//! 0xc000_0000  32-bit MMIO gap (virtio-mmio devices, IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000)
//! 0x1_0000_0000 the rest of RAM when the VM has more than 3 GiB
//! ```

use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

/// Real-mode IVT and BIOS data area end; the first byte the VMM may use for boot structures.
pub const GDT_START: u64 = 0x500;
/// Where the boot IDT (empty) lives.
pub const IDT_START: u64 = 0x520;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Identity-mapping page tables: PML4, PDPT, PD.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 x 2 MiB pages = the first GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line x86 Linux accepts (COMMAND_LINE_SIZE), including the NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area: RAM below it is usable, above it reserved.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of high memory (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Where virtio-mmio devices are placed (inside the gap, below the IOAPIC).
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
/// Smallest guest RAM the VMM accepts: room for the boot structures and a kernel.
pub const MIN_MEMORY_MIB: u64 = 32;

// The boot stack grows down from between the zero page and the page tables.
const _: () =
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000);

/// A contiguous range of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// First guest physical address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

impl RamRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Kind of an e820 entry, with the values of the Linux boot protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not RAM for the kernel.
    Reserved = 2,
}

/// One entry of the e820 memory map handed to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Kind.
    pub kind: E820Type,
}

/// Errors of guest memory set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested size is below the minimum or overflows.
    #[error("guest memory of {0} MiB is invalid: it must be at least {MIN_MEMORY_MIB} MiB and fit the address space")]
    InvalidSize(u64),
    /// mmap of guest RAM failed.
    #[error("cannot map {size} bytes of guest RAM: {source}")]
    Mmap {
        /// Bytes asked for.
        size: u64,
        /// Cause.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Guest RAM ranges for `mem_size` bytes of memory, skipping the 32-bit MMIO gap.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut ranges = vec![RamRange {
        start: 0,
        size: low,
    }];
    if mem_size > MMIO_GAP_START {
        ranges.push(RamRange {
            start: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
        });
    }
    ranges
}

/// The e820 map the guest sees: RAM below the EBDA, the reserved legacy hole, then RAM.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Type::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820Type::Reserved,
        },
    ];
    for range in ram_ranges(mem_size) {
        let start = range.start.max(HIMEM_START);
        if range.end() > start {
            map.push(E820Entry {
                addr: start,
                size: range.end() - start,
                kind: E820Type::Ram,
            });
        }
    }
    map
}

/// Maps `mem_mib` MiB of anonymous guest RAM (lazily backed: untouched pages cost nothing).
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, Error> {
    let size = mem_mib
        .checked_mul(1 << 20)
        .filter(|_| mem_mib >= MIN_MEMORY_MIB)
        .filter(|s| s.checked_add(MMIO_GAP_END).is_some())
        .ok_or(Error::InvalidSize(mem_mib))?;
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .iter()
        .map(|r| (GuestAddress(r.start), r.size as usize))
        .collect();
    let mem =
        GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::Mmap { size, source })?;
    for region in mem.iter() {
        advise_huge_pages(region.as_ptr(), region.len() as usize);
    }
    Ok(mem)
}

/// Asks for transparent huge pages on guest RAM, as QEMU does: one 2 MiB page instead of
/// 512 faults and 512 nested-paging entries. Untouched memory still costs nothing; where
/// THP is off this is a no-op.
fn advise_huge_pages(addr: *mut u8, len: usize) {
    // SAFETY: madvise only changes the paging policy of this mapping, which `mem` owns;
    // MADV_HUGEPAGE never discards contents.
    let ret = unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) };
    if ret != 0 {
        tracing::debug!(
            "madvise(MADV_HUGEPAGE) on guest RAM: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemory, GuestMemoryRegion};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_vm_is_one_range() {
        assert_eq!(
            ram_ranges(512 * MIB),
            vec![RamRange {
                start: 0,
                size: 512 * MIB
            }]
        );
    }

    #[test]
    fn large_vm_skips_the_mmio_gap() {
        let r = ram_ranges(4 * GIB);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].end(), MMIO_GAP_START);
        assert_eq!(r[1].start, MMIO_GAP_END);
        assert_eq!(r[0].size + r[1].size, 4 * GIB);
    }

    #[test]
    fn e820_reserves_the_legacy_hole_and_counts_all_ram() {
        for size in [64 * MIB, 3 * GIB, 5 * GIB] {
            let map = e820_map(size);
            assert_eq!(map[0].addr, 0);
            assert_eq!(map[0].size, EBDA_START);
            assert_eq!(map[1].kind, E820Type::Reserved);
            assert_eq!(map[1].addr + map[1].size, HIMEM_START);
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820Type::Ram)
                .map(|e| e.size)
                .sum();
            assert_eq!(ram, size - (HIMEM_START - EBDA_START), "size {size}");
            // Entries are sorted and disjoint, and none touches the MMIO gap.
            for w in map.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr);
            }
            assert!(map
                .iter()
                .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
        }
    }

    #[test]
    fn guest_memory_has_the_requested_size() {
        let mem = create_guest_memory(128).unwrap();
        let total: u64 = mem.iter().map(|r| r.len()).sum();
        assert_eq!(total, 128 * MIB);
    }

    #[test]
    fn too_small_or_huge_memory_is_rejected() {
        assert!(matches!(create_guest_memory(1), Err(Error::InvalidSize(1))));
        assert!(matches!(
            create_guest_memory(u64::MAX),
            Err(Error::InvalidSize(_))
        ));
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (GDT_START, 0x20),
            (IDT_START, 0x8),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{:x?}", w);
        }
        assert!(areas.last().map(|a| a.0 + a.1).unwrap() <= EBDA_START);
    }
}
