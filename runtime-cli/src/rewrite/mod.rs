//! Host side: rewriting an OCI spec so that it names no host path before it goes
//! to the guest.
//!
//! The rules (docs/agent-protocol.md, "The spec on the wire"):
//! - `root.path` (absolute, or relative to the bundle) becomes a location in the
//!   sandbox's single virtio-fs share: `<container_dir>/rootfs`;
//! - every bind mount's source (absolute, or relative to the bundle) becomes
//!   `<container_dir>/mounts/<index>-<name>`: directories and single files alike
//!   (a file bind, such as Docker's `/etc/resolv.conf`, gets its own subpath);
//!   sockets, FIFOs and device nodes cannot cross the VM boundary and are refused;
//! - pseudo filesystems (proc, sysfs, tmpfs, devpts, mqueue, cgroup, ...) pass
//!   unchanged; any other filesystem type needs a host device or path and is refused;
//! - hooks run on the host and are removed;
//! - namespace paths are host paths and are removed (see `linux.rs` for which
//!   namespace entries the guest keeps);
//! - `linux.devices` go by type and major:minor; an entry without numbers is looked
//!   up on the host, and refused unless it is a char or block device;
//! - `linux.cgroupsPath` is a host cgroup (where the runtime puts the VMM and
//!   shims); the guest gets `/runv/<container_dir>`;
//! - `linux.netDevices` name host interfaces and are refused;
//! - the LSM fields (`process.apparmorProfile`, `process.selinuxLabel`,
//!   `linux.mountLabel`) are removed and listed in [`RewrittenSpec::ignored`]: the
//!   guest has no LSM (`lsm.rs`).
//!
//! The caller (the runtime) then arranges each [`ShareEntry`] of the returned
//! [`ShareLayout`] under the share's host directory (bind mount or link), and puts
//! the container's processes in the [`HostOnly`] namespaces and cgroup.

mod linux;
pub mod lsm;
mod mounts;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use oci_spec::runtime::{Hooks, LinuxNamespaceType, Spec};

use runv_agent_protocol::share::{validate_component, validate_tag, ShareError, ShareLocation};

/// Where in the sandbox share this container's files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareTarget {
    /// The virtio-fs tag of the sandbox's share.
    pub tag: String,
    /// This container's directory inside the share, one path component (the
    /// container id, typically).
    pub container_dir: String,
}

/// Whether a share entry is a directory or a single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// The runtime creates an empty file at the entry's place and binds the host
    /// file onto it.
    File,
}

/// Why a share entry exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPurpose {
    Rootfs,
    /// The bind mount at `mounts[index]`, mounted at `destination` in the container.
    BindMount {
        index: usize,
        destination: PathBuf,
    },
}

/// One host path the runtime must make visible under the share directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareEntry {
    /// The host path, made absolute (relative paths are resolved against the
    /// bundle). Symlinks are not resolved here; binding it follows them.
    pub host_path: PathBuf,
    /// Where it must appear: `share_dir/<location.subpath>` on the host, which
    /// the guest sees at `location.guest_path()`.
    pub location: ShareLocation,
    pub kind: EntryKind,
    /// `root.readonly`, or `ro` among the bind options: the runtime may make the
    /// host side read-only as well.
    pub readonly: bool,
    /// `rbind` among the bind options: the runtime binds recursively.
    pub recursive: bool,
    pub purpose: EntryPurpose,
}

/// Everything the runtime must arrange under the share for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLayout {
    pub tag: String,
    /// The rootfs entry first, then one per bind mount, in spec order.
    pub entries: Vec<ShareEntry>,
}

/// A namespace path from the spec; it stays on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNamespace {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
}

/// The parts of the spec that stay on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOnly {
    /// The spec's hooks: the runtime runs them on the host.
    pub hooks: Option<Hooks>,
    /// Namespace paths: the sandbox processes (VMM, shims) live in the network
    /// namespace named here.
    pub namespaces: Vec<HostNamespace>,
    /// The spec's `linux.cgroupsPath`: where the VMM and shims go on the host.
    pub cgroups_path: Option<PathBuf>,
}

/// The result of [`rewrite_spec_for_guest`].
#[derive(Debug, Clone, PartialEq)]
pub struct RewrittenSpec {
    /// The spec to send in `CreateContainer`.
    pub spec: Spec,
    /// Where the rootfs is: `CreateContainer.rootfs`.
    pub rootfs: ShareLocation,
    pub layout: ShareLayout,
    pub host: HostOnly,
    /// Fields the spec asked for that runv accepts and does not apply (the LSM ones),
    /// each logged once at info by the rewrite.
    pub ignored: Vec<lsm::IgnoredField>,
}

/// Why a spec cannot be sent to the guest. Each names the field and value.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("invalid share target: {0}")]
    Share(#[from] ShareError),
    #[error("invalid container directory {dir:?} in the share: {reason}")]
    ContainerDir { dir: String, reason: &'static str },
    #[error("root: the spec has no root filesystem")]
    MissingRoot,
    #[error("root.path {}: {source}", path.display())]
    RootfsUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("root.path {}: not a directory", path.display())]
    RootfsNotDirectory { path: PathBuf },
    #[error("mounts[{index}] (destination {}): bind mount without a source", destination.display())]
    BindWithoutSource { index: usize, destination: PathBuf },
    #[error("mounts[{index}] (destination {}): bind source {} does not exist or cannot be read: {source}", destination.display(), path.display())]
    BindSourceMissing {
        index: usize,
        destination: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounts[{index}] (destination {}): bind source {} is a {kind}, which cannot be shared with the VM", destination.display(), path.display())]
    UnsupportedBindSource {
        index: usize,
        destination: PathBuf,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("mounts[{index}] (destination {}): no type and no bind option", destination.display())]
    MountTypeMissing { index: usize, destination: PathBuf },
    #[error("mounts[{index}] (destination {}): type {typ:?} needs a host device or path the VM cannot reach; use a bind mount", destination.display())]
    UnsupportedMountType {
        index: usize,
        destination: PathBuf,
        typ: String,
    },
    #[error("linux.devices[{index}] ({}): type {typ:?} is not a device node type (c, u, b or p)", path.display())]
    InvalidDeviceType {
        index: usize,
        path: PathBuf,
        typ: String,
    },
    #[error("linux.devices[{index}] ({}): no major:minor given and the host path cannot be read: {source}", path.display())]
    DeviceUnreadable {
        index: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("linux.devices[{index}] ({}): the host path is a {kind}, not a char or block device", path.display())]
    NotADevice {
        index: usize,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("linux.devices[{index}] ({}): declared type {declared:?} but the host node is a {found} device", path.display())]
    DeviceTypeMismatch {
        index: usize,
        path: PathBuf,
        declared: String,
        found: &'static str,
    },
    #[error("linux.netDevices: host interfaces {names:?} cannot be moved into the VM")]
    NetDevices { names: Vec<String> },
}

/// Rewrites `spec` for the guest. `bundle_dir` resolves relative `root.path` and
/// bind sources; `share` says where this container's entries go in the share.
pub fn rewrite_spec_for_guest(
    spec: &Spec,
    bundle_dir: &std::path::Path,
    share: &ShareTarget,
) -> Result<RewrittenSpec, RewriteError> {
    validate_tag(&share.tag)?;
    validate_component(&share.container_dir).map_err(|reason| RewriteError::ContainerDir {
        dir: share.container_dir.clone(),
        reason,
    })?;
    let mut spec = spec.clone();

    let root = mounts::rewrite_root(&mut spec, bundle_dir, share)?;
    let rootfs = root.location.clone();
    let mut entries = vec![root];
    entries.extend(mounts::rewrite_mounts(&mut spec, bundle_dir, share)?);

    let hooks = spec.hooks_mut().take();
    let (namespaces, cgroups_path) = linux::rewrite_linux(&mut spec, share)?;
    let ignored = lsm::strip(&mut spec);
    if !ignored.is_empty() {
        let list: Vec<String> = ignored.iter().map(ToString::to_string).collect();
        tracing::info!(
            "ignoring {}: the guest kernel has no LSM, the VM is the container's boundary",
            list.join(", ")
        );
    }

    Ok(RewrittenSpec {
        spec,
        rootfs,
        layout: ShareLayout {
            tag: share.tag.clone(),
            entries,
        },
        host: HostOnly {
            hooks,
            namespaces,
            cgroups_path,
        },
        ignored,
    })
}

/// Resolves `path` against the bundle and makes it absolute.
fn resolve(bundle_dir: &std::path::Path, path: &std::path::Path) -> PathBuf {
    let joined = bundle_dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}
