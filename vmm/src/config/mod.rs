//! What the VM is made of, as given on the command line. The device options share one
//! `key=value[,key=value]` parser, [`options`].

pub mod options;

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
    /// At most this many bytes of console output (`--console-limit`); `None`: no limit.
    pub console_limit: Option<u64>,
    /// virtio-fs shares (`--fs`).
    pub fs: Vec<crate::devices::virtio::fs::FsConfig>,
    /// virtio-blk images (`--block`), in order: the first is /dev/vda.
    pub block: Vec<crate::devices::virtio::block::BlockConfig>,
    /// The hybrid-vsock device (`--vsock`).
    pub vsock: Option<crate::devices::virtio::vsock::VsockConfig>,
    /// virtio-net devices (`--net`), in order.
    pub net: Vec<crate::devices::virtio::net::NetConfig>,
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
    /// One tap fd for two devices: both would own (and close) it.
    #[error("--net fd={0} is given twice: each device needs its own tap")]
    NetFd(i32),
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
        if let Some(fs) = repeated(&self.fs, |fs| &fs.tag) {
            return Err(Error::FsTag(fs.tag.clone()));
        }
        if let Some(net) = repeated(&self.net, |net| &net.fd) {
            return Err(Error::NetFd(net.fd));
        }
        Ok(())
    }
}

/// The first item whose `key` an earlier item has too.
fn repeated<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> &K) -> Option<&T> {
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].iter().any(|other| key(other) == key(item)))
        .map(|(_, item)| item)
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
            console_limit: None,
            fs: Vec::new(),
            block: Vec::new(),
            vsock: None,
            net: Vec::new(),
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

    /// `ok` together are valid; `again` added to them is refused, the error saying `says`.
    fn assert_unique<T: FromStr>(
        field: fn(&mut VmConfig) -> &mut Vec<T>,
        ok: [&str; 2],
        again: &str,
        says: &str,
    ) where
        T::Err: std::fmt::Debug,
    {
        let mut c = cfg(1, 128);
        *field(&mut c) = ok.iter().map(|s| s.parse().unwrap()).collect();
        assert!(c.validate().is_ok());
        field(&mut c).push(again.parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{again}: {e}");
    }

    #[test]
    fn fs_tags_are_unique() {
        assert_unique(
            |c| &mut c.fs,
            ["tag=a,path=/x", "tag=b,path=/x,ro"],
            "tag=a,path=/y",
            "--fs tag=a",
        );
    }

    #[test]
    fn net_fds_are_unique() {
        assert_unique(
            |c| &mut c.net,
            ["fd=3,mac=02:00:00:00:00:01", "fd=4,mac=02:00:00:00:00:02"],
            "fd=3,mac=02:00:00:00:00:03",
            "--net fd=3",
        );
    }
}
