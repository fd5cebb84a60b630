//! Loads the kernel (ELF vmlinux, or bzImage) and the initramfs into guest memory.

use super::Error;
use crate::memory::{HIMEM_START, MMIO_GAP_START};
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use std::fs::File;
use std::path::Path;
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryMmap, ReadVolatile};

/// Offset of the 64-bit entry point (`startup_64`) from the start of a bzImage's
/// protected-mode code (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// The bzImage's xloadflags bit that says it has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;

/// Where the vCPU starts and what the zero page must carry for the loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct KernelEntry {
    /// 64-bit entry point (RIP of the boot vCPU).
    pub entry: GuestAddress,
    /// First guest address past the kernel image.
    pub kernel_end: u64,
    /// The bzImage's setup header, to be copied into the zero page (None for ELF).
    pub setup_header: Option<setup_header>,
}

/// Guest location of the loaded initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdLocation {
    /// First address.
    pub addr: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Loads `path` as an ELF vmlinux (64-bit direct entry) or, failing that, as a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<KernelEntry, Error> {
    let file_err = |source| Error::KernelFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(file_err)?;
    let elf = match Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(res) => {
            return Ok(KernelEntry {
                entry: res.kernel_load,
                kernel_end: res.kernel_end,
                setup_header: None,
            })
        }
        Err(e) => e,
    };
    let bzimage = match BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))) {
        Ok(res) => match res.setup_header {
            Some(hdr) if hdr.xloadflags & XLF_KERNEL_64 != 0 => {
                return Ok(KernelEntry {
                    entry: res.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
                    kernel_end: res.kernel_end,
                    setup_header: Some(hdr),
                })
            }
            _ => linux_loader::loader::Error::InvalidKernelStartAddress,
        },
        Err(e) => e,
    };
    Err(Error::KernelFormat {
        path: path.to_path_buf(),
        elf,
        bzimage,
    })
}

/// Copies the initramfs at `path` to the highest page-aligned spot of low RAM that lies
/// above the kernel, where Linux expects it (below 4 GiB, not overlapping the kernel).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<InitrdLocation, Error> {
    let file_err = |source| Error::InitrdFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(file_err)?;
    let size = file.metadata().map_err(file_err)?.len();
    let limit = (mem.last_addr().raw_value() + 1).min(MMIO_GAP_START);
    let too_large = || Error::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
        kernel_end,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_large)? & !0xfff;
    if addr < kernel_end.max(HIMEM_START) {
        return Err(too_large());
    }
    let mut slice = mem
        .get_slice(GuestAddress(addr), size as usize)
        .map_err(|e| Error::GuestWrite {
            what: "initramfs",
            reason: e.to_string(),
        })?;
    let mut copied = 0;
    while !slice.is_empty() {
        let n = file
            .read_volatile(&mut slice)
            .map_err(|e| Error::InitrdFile {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        if n == 0 {
            return Err(file_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file shrank while loading: {copied} of {size} bytes read"),
            )));
        }
        copied += n;
        slice = slice.offset(n).map_err(|e| Error::GuestWrite {
            what: "initramfs",
            reason: e.to_string(),
        })?;
    }
    Ok(InitrdLocation {
        addr: GuestAddress(addr),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use std::io::Write;
    use vm_memory::Bytes;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("runv-loader-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    }

    #[test]
    fn garbage_kernel_is_rejected_naming_the_file() {
        let mem = create_guest_memory(64).unwrap();
        let path = temp_file("garbage", &[0x5a; 8192]);
        let e = load_kernel(&mem, &path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(e, Error::KernelFormat { .. }));
        assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
    }

    #[test]
    fn missing_kernel_is_an_io_error_naming_the_file() {
        let mem = create_guest_memory(64).unwrap();
        let e = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }

    #[test]
    fn minimal_elf_loads_at_its_physical_address() {
        // A hand-made ELF64 executable with one PT_LOAD segment of 16 bytes at 16 MiB.
        let mut elf = vec![0u8; 0x78 + 16];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little endian
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        elf[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        elf[52..54].copy_from_slice(&0x40u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 0x40;
        elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
        elf[ph + 24..ph + 32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // p_paddr
        elf[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz
        elf[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes()); // p_memsz
        elf[0x78..].copy_from_slice(&[0xf4; 16]);
        let path = temp_file("elf", &elf);
        let mem = create_guest_memory(64).unwrap();
        let k = load_kernel(&mem, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(k.entry, GuestAddress(0x100_0000));
        assert_eq!(k.kernel_end, 0x100_0010);
        assert!(k.setup_header.is_none());
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x100_000f)).unwrap(), 0xf4);
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram_page_aligned() {
        let mem = create_guest_memory(64).unwrap();
        let path = temp_file("initrd", &[7u8; 10000]);
        let loc = load_initrd(&mem, &path, 0x200_0000).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loc.size, 10000);
        assert_eq!(loc.addr.raw_value() & 0xfff, 0);
        assert!(loc.addr.raw_value() + 10000 <= 64 << 20);
        assert!(loc.addr.raw_value() + 10000 + 0x1000 > 64 << 20);
        assert_eq!(mem.read_obj::<u8>(loc.addr).unwrap(), 7);
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_rejected() {
        let mem = create_guest_memory(32).unwrap();
        let path = temp_file("bigrd", &vec![0u8; 20 << 20]);
        let e = load_initrd(&mem, &path, 0x100_0000 + (1 << 20)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(e, Error::InitrdTooLarge { .. }), "{e}");
    }
}
