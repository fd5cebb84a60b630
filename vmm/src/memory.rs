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

use std::ops::Deref;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

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
/// Huge page size: guest RAM is mapped at host addresses aligned to it.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;
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
        source: std::io::Error,
    },
    /// vm-memory refused the regions (overlap or address overflow).
    #[error("guest RAM regions: {0}")]
    Regions(String),
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

/// Guest RAM: the memory the VM and its devices share (`Deref` to it), and the host
/// mappings behind it.
///
/// Each range is mapped at a host address aligned to [`HUGE_PAGE_SIZE`], as QEMU does:
/// KVM maps guest memory with 2 MiB nested-paging entries only where the host address
/// and the guest address agree modulo 2 MiB, and a plain anonymous mmap (Linux before
/// 6.7 aligns none) almost never does, so every 4 KiB page the guest touched first cost
/// its own nested page fault. vm-memory cannot place a mapping, so the mappings are ours
/// and are unmapped when the last user of the memory is gone (see [`GuestRam::release`]).
pub struct GuestRam {
    mem: GuestMemoryMmap,
    mappings: Vec<RamMapping>,
}

struct RamMapping {
    region: Arc<GuestRegionMmap>,
    reservation: Reservation,
}

/// An address range of ours: the guest RAM mapping inside it, `PROT_NONE` around it.
struct Reservation {
    start: usize,
    len: usize,
}

impl Reservation {
    /// Unmaps the whole range.
    ///
    /// # Safety
    /// Nothing may use memory in the range any more.
    unsafe fn unmap(self) {
        // SAFETY: the range is ours (see `map_aligned`) and unused, as the caller promises.
        unsafe { libc::munmap(self.start as *mut libc::c_void, self.len) };
    }
}

impl Deref for GuestRam {
    type Target = GuestMemoryMmap;
    fn deref(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

impl GuestRam {
    /// Unmaps every range no one else holds any more (a clone of the memory given to a
    /// device keeps its ranges mapped); returns how many were unmapped. After this the
    /// memory is empty.
    pub fn release(&mut self) -> usize {
        self.mem = GuestMemoryMmap::default();
        let mut unmapped = 0;
        for m in self.mappings.drain(..) {
            match Arc::try_unwrap(m.region) {
                Ok(region) => {
                    drop(region);
                    // SAFETY: the last reference to the region that wraps this mapping was
                    // just dropped, so no one can reach these addresses any more.
                    unsafe { m.reservation.unmap() };
                    unmapped += 1;
                }
                Err(_) => tracing::warn!(
                    "guest RAM at host {:#x} is still in use at teardown; left mapped",
                    m.reservation.start
                ),
            }
        }
        unmapped
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        self.release();
    }
}

/// Flags of a guest RAM mapping (those vm-memory uses for anonymous regions).
const RAM_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RAM_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// Maps `len` bytes of anonymous memory at a host address aligned to [`HUGE_PAGE_SIZE`]:
/// reserves `len` + 2 MiB without access and maps the aligned part over it; returns the
/// mapping's address and the reservation. The slack stays reserved: unmapped, it would
/// leave a free 2 MiB-aligned hole beside guest RAM, where the next thread stack lands
/// and, with THP set to `always`, costs a whole huge page.
fn map_aligned(len: usize) -> std::io::Result<(usize, Reservation)> {
    let total = len
        .checked_add(HUGE_PAGE_SIZE)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing; it touches
    // no existing memory.
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            RAM_FLAGS,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let reservation = Reservation {
        start: start as usize,
        len: total,
    };
    let aligned = reservation.start.next_multiple_of(HUGE_PAGE_SIZE);
    // SAFETY: [aligned, aligned + len) lies inside the reservation just made, which
    // nothing else uses; MAP_FIXED replaces that part of it.
    let ram = unsafe {
        libc::mmap(
            aligned as *mut libc::c_void,
            len,
            RAM_PROT,
            RAM_FLAGS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if ram == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        // SAFETY: the reservation is ours and nothing uses it.
        unsafe { reservation.unmap() };
        return Err(err);
    }
    Ok((aligned, reservation))
}

/// Maps `mem_mib` MiB of anonymous guest RAM (lazily backed: untouched pages cost nothing).
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestRam, Error> {
    let size = mem_mib
        .checked_mul(1 << 20)
        .filter(|_| mem_mib >= MIN_MEMORY_MIB)
        .filter(|s| s.checked_add(MMIO_GAP_END).is_some())
        .ok_or(Error::InvalidSize(mem_mib))?;
    let mut ram = GuestRam {
        mem: GuestMemoryMmap::default(),
        mappings: Vec::new(),
    };
    for range in ram_ranges(size) {
        let len = usize::try_from(range.size).map_err(|_| Error::InvalidSize(mem_mib))?;
        let (addr, reservation) =
            map_aligned(len).map_err(|source| Error::Mmap { size, source })?;
        // SAFETY: [addr, addr + len) is the mapping just made, readable and writable, and
        // `ram` unmaps it only once no region wrapping it is left.
        let built = unsafe {
            MmapRegionBuilder::new(len)
                .with_raw_mmap_pointer(addr as *mut u8)
                .with_mmap_prot(RAM_PROT)
                .with_mmap_flags(RAM_FLAGS)
                .build()
        };
        let region = built
            .ok()
            .and_then(|r| GuestRegionMmap::new(r, GuestAddress(range.start)));
        let Some(region) = region else {
            // SAFETY: the mapping was made above and nothing wraps it.
            unsafe { reservation.unmap() };
            return Err(Error::Regions(format!(
                "cannot wrap {len} bytes at guest {:#x}",
                range.start
            )));
        };
        advise_huge_pages(addr as *mut u8, len);
        ram.mappings.push(RamMapping {
            region: Arc::new(region),
            reservation,
        });
    }
    let regions = ram.mappings.iter().map(|m| m.region.clone()).collect();
    ram.mem =
        GuestMemoryMmap::from_arc_regions(regions).map_err(|e| Error::Regions(e.to_string()))?;
    Ok(ram)
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
    fn guest_ram_is_huge_page_aligned_on_the_host() {
        for mib in [64, 3 * 1024 + 512] {
            let mem = create_guest_memory(mib).unwrap();
            for region in mem.iter() {
                let host = mem.get_host_address(region.start_addr()).unwrap() as usize;
                assert_eq!(host % HUGE_PAGE_SIZE, 0, "{mib} MiB: host {host:#x}");
            }
        }
    }

    #[test]
    fn guest_ram_is_unmapped_only_when_no_one_holds_it() {
        use vm_memory::Bytes;
        let mut ram = create_guest_memory(64).unwrap();
        ram.write_obj(0x5a5a_u16, GuestAddress(0x1000)).unwrap();
        assert_eq!(ram.release(), 1);
        assert_eq!(ram.iter().count(), 0);

        let mut ram = create_guest_memory(64).unwrap();
        let device_copy: GuestMemoryMmap = (*ram).clone();
        assert_eq!(ram.release(), 0, "a device still holds the memory");
        // Still mapped: reading and writing through the device's copy works.
        device_copy.write_obj(7_u32, GuestAddress(0x2000)).unwrap();
        assert_eq!(
            device_copy.read_obj::<u32>(GuestAddress(0x2000)).unwrap(),
            7
        );
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
