//! Everything that happens before the first vCPU instruction: loading the kernel and the
//! initramfs, and writing the Linux zero page and command line into guest memory.

mod cmdline;
mod loader;
mod params;

pub use cmdline::{base_cmdline, build_cmdline, DEFAULT_CMDLINE};
pub use loader::{load_initrd, load_kernel, InitrdLocation, KernelEntry};
pub use params::{build_boot_params, write_boot_params};

use std::path::PathBuf;

/// Errors of the boot set-up, each naming the input that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel image cannot be opened or read.
    #[error("cannot read kernel image {path}: {source}")]
    KernelFile {
        /// The image.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The kernel is neither a loadable ELF vmlinux nor a bzImage.
    #[error("kernel image {path} is neither an x86_64 ELF vmlinux nor a bzImage (ELF: {elf}; bzImage: {bzimage})")]
    KernelFormat {
        /// The image.
        path: PathBuf,
        /// Why the ELF loader refused it.
        elf: linux_loader::loader::Error,
        /// Why the bzImage loader refused it.
        bzimage: linux_loader::loader::Error,
    },
    /// The initramfs cannot be opened or read.
    #[error("cannot read initramfs {path}: {source}")]
    InitrdFile {
        /// The image.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The initramfs does not fit in guest RAM below the MMIO gap next to the kernel.
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory between the kernel end {kernel_end:#x} and {limit:#x}; give the VM more memory")]
    InitrdTooLarge {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// First free address after the kernel.
        kernel_end: u64,
        /// Highest usable address.
        limit: u64,
    },
    /// The command line is too long or malformed.
    #[error("kernel command line {cmdline:?} is invalid: {reason}")]
    Cmdline {
        /// The line.
        cmdline: String,
        /// Why.
        reason: String,
    },
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {what} into guest memory: {reason}")]
    GuestWrite {
        /// Which structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
