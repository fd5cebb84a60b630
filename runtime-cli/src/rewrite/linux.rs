//! `linux.*`: namespace paths, devices, cgroups path, net devices.
//!
//! Namespaces. A namespace `path` names a host namespace (a CNI netns under
//! `/var/run/netns`, a pause container's `/proc/<pid>/ns/ipc`); it never reaches
//! the guest. The VM is the sandbox, so:
//! - `network`: always removed. The container uses the VM's network namespace,
//!   whose NIC is attached in the host network namespace the sandbox processes
//!   (VMM, shims) live in: the entry's path, if any. Without a path the runtime
//!   gives the sandbox a namespace of its own. Containers of one pod therefore
//!   share the pod network, as they do with runc.
//! - `ipc`, `uts` with a path (joining the pod's): removed, so the container
//!   shares the VM's namespace, which is the pod's (hostname from
//!   `CreateSandbox`). Without a path: kept, a fresh namespace in the guest.
//! - `pid`, `mount`, `user`, `cgroup`, `time` with a path: the path is removed
//!   and the entry kept, so the container gets a fresh namespace in the guest.
//!   Joining another container's PID namespace (a pod's shareProcessNamespace)
//!   is not supported; the VM's own PID and mount namespaces belong to the agent.
//!
//! Every removed path is returned as a [`HostNamespace`].

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Spec};

use super::{HostNamespace, RewriteError, ShareTarget};

/// Prefix of the guest cgroup path given to every container: `/runv/<dir>`.
pub const GUEST_CGROUP_PARENT: &str = "/runv";

/// Rewrites `spec.linux`; returns the host namespace paths and host cgroups path.
pub(super) fn rewrite_linux(
    spec: &mut Spec,
    share: &ShareTarget,
) -> Result<(Vec<HostNamespace>, Option<PathBuf>), RewriteError> {
    let Some(linux) = spec.linux_mut().as_mut() else {
        return Ok((Vec::new(), None));
    };

    if let Some(devs) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) {
        let mut names: Vec<String> = devs.keys().cloned().collect();
        names.sort();
        return Err(RewriteError::NetDevices { names });
    }

    let mut host_namespaces = Vec::new();
    if let Some(namespaces) = linux.namespaces_mut().as_mut() {
        let mut kept = Vec::with_capacity(namespaces.len());
        for mut ns in namespaces.drain(..) {
            let typ = ns.typ();
            let had_path = match ns.path().clone() {
                Some(path) => {
                    host_namespaces.push(HostNamespace { typ, path });
                    ns.set_path(None);
                    true
                }
                None => false,
            };
            if keep_for_guest(typ, had_path) {
                kept.push(ns);
            }
        }
        *namespaces = kept;
    }

    if let Some(devices) = linux.devices_mut().as_mut() {
        for (index, dev) in devices.iter_mut().enumerate() {
            rewrite_device(index, dev)?;
        }
    }

    let host_cgroups = linux.cgroups_path_mut().take();
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "{GUEST_CGROUP_PARENT}/{}",
        share.container_dir
    ))));

    Ok((host_namespaces, host_cgroups))
}

/// Whether a namespace entry stays in the guest's spec (module docs).
pub fn keep_for_guest(typ: LinuxNamespaceType, had_path: bool) -> bool {
    match typ {
        LinuxNamespaceType::Network => false,
        LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts => !had_path,
        LinuxNamespaceType::Pid
        | LinuxNamespaceType::Mount
        | LinuxNamespaceType::User
        | LinuxNamespaceType::Cgroup
        | LinuxNamespaceType::Time => true,
    }
}

/// Major number of a Linux `dev_t` (glibc's `gnu_dev_major`).
pub fn dev_major(dev: u64) -> i64 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as i64
}

/// Minor number of a Linux `dev_t` (glibc's `gnu_dev_minor`).
pub fn dev_minor(dev: u64) -> i64 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as i64
}

/// A device entry goes by type and major:minor; `path` is where the node is made
/// in the container (an OCI container path, kept). An entry with 0:0 (no numbers,
/// which no real device has) is looked up on the host at `path`, the same-path
/// convention of `docker run --device /dev/x`, and must be a char or block device.
fn rewrite_device(index: usize, dev: &mut LinuxDevice) -> Result<(), RewriteError> {
    let declared = dev.typ();
    if declared == LinuxDeviceType::A {
        return Err(RewriteError::InvalidDeviceType {
            index,
            path: dev.path().clone(),
            typ: declared.as_str().to_owned(),
        });
    }
    if declared == LinuxDeviceType::P || dev.major() != 0 || dev.minor() != 0 {
        // A FIFO is made fresh in the guest; numbered nodes are made as given.
        return Ok(());
    }
    let path = dev.path().clone();
    let meta = fs::metadata(&path).map_err(|source| RewriteError::DeviceUnreadable {
        index,
        path: path.clone(),
        source,
    })?;
    let ft = meta.file_type();
    let found = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        let kind = if ft.is_file() {
            "regular file"
        } else if ft.is_dir() {
            "directory"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_fifo() {
            "FIFO"
        } else {
            "special file"
        };
        return Err(RewriteError::NotADevice { index, path, kind });
    };
    let matches = match declared {
        LinuxDeviceType::C | LinuxDeviceType::U => found == LinuxDeviceType::C,
        LinuxDeviceType::B => found == LinuxDeviceType::B,
        LinuxDeviceType::A | LinuxDeviceType::P => false,
    };
    if !matches {
        return Err(RewriteError::DeviceTypeMismatch {
            index,
            path,
            declared: declared.as_str().to_owned(),
            found: if found == LinuxDeviceType::C {
                "char"
            } else {
                "block"
            },
        });
    }
    dev.set_major(dev_major(meta.rdev()));
    dev.set_minor(dev_minor(meta.rdev()));
    Ok(())
}
