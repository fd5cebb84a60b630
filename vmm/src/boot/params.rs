//! The Linux zero page (`struct boot_params`): e820 map, command line, initramfs, ACPI RSDP.

use super::{Error, InitrdLocation};
use crate::memory::{e820_map, CMDLINE_START, ZERO_PAGE_START};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Address, GuestAddress, GuestMemoryMmap};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// loadflags: the protected-mode kernel is loaded at 0x100000 or above.
const LOADED_HIGH: u8 = 0x01;
/// loadflags: the boot loader does not reload segment registers (we enter in 64-bit mode).
const KEEP_SEGMENTS: u8 = 0x40;

/// Builds the zero page for a kernel with an optional bzImage `hdr`, a command line of
/// `cmdline_len` bytes (without NUL), an optional initramfs, `mem_size` bytes of RAM and
/// the ACPI RSDP at `rsdp`.
pub fn build_boot_params(
    hdr: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdLocation>,
    mem_size: u64,
    rsdp: Option<GuestAddress>,
) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    if let Some(hdr) = hdr {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.loadflags |= LOADED_HIGH | KEEP_SEGMENTS;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(rd) = initrd {
        let addr = rd.addr.raw_value();
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = rd.size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (rd.size >> 32) as u32;
    }
    if let Some(rsdp) = rsdp {
        params.acpi_rsdp_addr = rsdp.raw_value();
    }
    let map = e820_map(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(Error::GuestWrite {
            what: "e820 map",
            reason: format!("{} entries exceed the zero page's table", map.len()),
        });
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page and the command line into guest memory.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    params: &boot_params,
    cmdline: &Cmdline,
) -> Result<(), Error> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(|e| {
        Error::GuestWrite {
            what: "kernel command line",
            reason: e.to_string(),
        }
    })?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new(params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| Error::GuestWrite {
        what: "zero page",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, EBDA_START};
    use vm_memory::Bytes;

    #[test]
    fn zero_page_carries_magic_cmdline_initrd_and_rsdp() {
        let rd = InitrdLocation {
            addr: GuestAddress(0x300_0000),
            size: 4096,
        };
        let p =
            build_boot_params(None, 42, Some(rd), 128 << 20, Some(GuestAddress(0xe0000))).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 4096);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(p.e820_entries, 3);
        let first = p.e820_table[0];
        assert_eq!(
            ({ first.addr }, { first.size }, { first.type_ }),
            (0, EBDA_START, 1)
        );
        let last = p.e820_table[2];
        assert_eq!({ last.addr } + { last.size }, 128 << 20);
    }

    #[test]
    fn bzimage_header_fields_are_kept() {
        let hdr = setup_header {
            setup_sects: 30,
            xloadflags: 1,
            ..Default::default()
        };
        let p = build_boot_params(Some(hdr), 1, None, 64 << 20, None).unwrap();
        assert_eq!(p.hdr.setup_sects, 30);
        assert_eq!({ p.hdr.xloadflags }, 1);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }

    #[test]
    fn zero_page_and_cmdline_land_in_guest_memory() {
        let mem = create_guest_memory(64).unwrap();
        let cmdline = super::super::build_cmdline(Some("console=ttyS0"), &[]).unwrap();
        let p = build_boot_params(None, 13, None, 64 << 20, None).unwrap();
        write_boot_params(&mem, &p, &cmdline).unwrap();
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        let back: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ back.hdr.boot_flag }, 0xaa55);
        assert_eq!(back.e820_entries, 3);
    }
}
