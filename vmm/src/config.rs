//! What the VM is made of, as given on the command line.

use std::path::PathBuf;
use std::str::FromStr;

/// Most vCPUs a VM may have (APIC ids fit in 8 bits; 255 is the broadcast id).
pub const MAX_VCPUS: u8 = 254;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// The VMM's standard output.
    Stdout,
    /// Discarded.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

impl FromStr for Console {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Console::Stdout),
            "off" => Ok(Console::Off),
            "" => Err("console must be stdout, off or a file path, not empty".into()),
            path => Ok(Console::File(PathBuf::from(path))),
        }
    }
}

/// Everything needed to boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Replaces the default kernel command line; the VMM's device entries are appended.
    pub cmdline: Option<String>,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Serial console destination.
    pub console: Console,
    /// virtio-fs shares (`--fs`).
    pub fs: Vec<crate::devices::virtio::fs::FsConfig>,
    /// virtio-blk images (`--block`), in order: the first is /dev/vda.
    pub block: Vec<crate::devices::virtio::block::BlockConfig>,
    /// The hybrid-vsock device (`--vsock`).
    pub vsock: Option<crate::devices::virtio::vsock::VsockConfig>,
}

/// An invalid configuration value, naming it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// vCPU count out of range.
    #[error("--cpus {0} is invalid: it must be between 1 and {MAX_VCPUS}")]
    Cpus(u8),
    /// Memory size out of range.
    #[error("--memory {0} is invalid: it must be at least {min} MiB", min = crate::memory::MIN_MEMORY_MIB)]
    Memory(u64),
    /// Two virtio-fs shares with one tag: the guest could not tell them apart.
    #[error("--fs tag={0} is given twice: tags must be unique")]
    FsTag(String),
}

impl VmConfig {
    /// Checks the values that do not need the host.
    pub fn validate(&self) -> Result<(), Error> {
        if self.cpus == 0 || self.cpus > MAX_VCPUS {
            return Err(Error::Cpus(self.cpus));
        }
        if self.memory_mib < crate::memory::MIN_MEMORY_MIB {
            return Err(Error::Memory(self.memory_mib));
        }
        for (i, fs) in self.fs.iter().enumerate() {
            if self.fs[..i].iter().any(|other| other.tag == fs.tag) {
                return Err(Error::FsTag(fs.tag.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cpus: u8, memory_mib: u64) -> VmConfig {
        VmConfig {
            kernel: "vmlinux".into(),
            initrd: None,
            cmdline: None,
            cpus,
            memory_mib,
            console: Console::Stdout,
            fs: Vec::new(),
            block: Vec::new(),
            vsock: None,
        }
    }

    #[test]
    fn console_parses() {
        assert_eq!("stdout".parse::<Console>().unwrap(), Console::Stdout);
        assert_eq!("off".parse::<Console>().unwrap(), Console::Off);
        assert_eq!(
            "/tmp/c.log".parse::<Console>().unwrap(),
            Console::File("/tmp/c.log".into())
        );
        assert!("".parse::<Console>().is_err());
    }

    #[test]
    fn ranges_are_checked_and_named() {
        assert!(cfg(1, 128).validate().is_ok());
        assert!(cfg(0, 128)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--cpus 0"));
        assert!(cfg(255, 128).validate().is_err());
        assert!(cfg(2, 8)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--memory 8"));
    }

    #[test]
    fn fs_tags_are_unique() {
        let mut c = cfg(1, 128);
        c.fs = vec![
            "tag=a,path=/x".parse().unwrap(),
            "tag=b,path=/x,ro".parse().unwrap(),
        ];
        assert!(c.validate().is_ok());
        c.fs.push("tag=a,path=/y".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("--fs tag=a"));
    }
}
