//! `root.path` and bind-mount sources: host paths become share locations.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use oci_spec::runtime::{Mount, Spec};

use super::{resolve, EntryKind, EntryPurpose, RewriteError, ShareEntry, ShareTarget};
use runv_agent_protocol::share::ShareLocation;

/// Filesystem types that need no host resource: the guest kernel makes them.
pub const PASS_THROUGH_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "ramfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "hugetlbfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "pstore",
];

/// Longest readable suffix kept from a bind source's file name.
const MAX_NAME_SUFFIX: usize = 48;

/// Rewrites `root.path`; returns the rootfs entry.
pub(super) fn rewrite_root(
    spec: &mut Spec,
    bundle_dir: &Path,
    share: &ShareTarget,
) -> Result<ShareEntry, RewriteError> {
    let root = spec.root_mut().as_mut().ok_or(RewriteError::MissingRoot)?;
    let host_path = resolve(bundle_dir, root.path());
    let meta = fs::metadata(&host_path).map_err(|source| RewriteError::RootfsUnreadable {
        path: host_path.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(RewriteError::RootfsNotDirectory { path: host_path });
    }
    let location = ShareLocation::new(&share.tag, format!("{}/rootfs", share.container_dir))?;
    root.set_path(location.guest_path()?);
    Ok(ShareEntry {
        host_path,
        location,
        kind: EntryKind::Directory,
        readonly: root.readonly().unwrap_or(false),
        recursive: true,
        purpose: EntryPurpose::Rootfs,
    })
}

/// True for a bind mount: type `bind`, or `bind`/`rbind` among the options (runc
/// treats both the same way).
pub fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind") || has_option(mount, &["bind", "rbind"])
}

fn has_option(mount: &Mount, names: &[&str]) -> bool {
    mount
        .options()
        .as_ref()
        .is_some_and(|opts| opts.iter().any(|o| names.contains(&o.as_str())))
}

/// Rewrites every bind source; returns one entry per bind mount, in spec order.
pub(super) fn rewrite_mounts(
    spec: &mut Spec,
    bundle_dir: &Path,
    share: &ShareTarget,
) -> Result<Vec<ShareEntry>, RewriteError> {
    let Some(mounts) = spec.mounts_mut().as_mut() else {
        return Ok(Vec::new());
    };
    let mut entries = Vec::new();
    for (index, mount) in mounts.iter_mut().enumerate() {
        if is_bind(mount) {
            entries.push(rewrite_bind(index, mount, bundle_dir, share)?);
        } else {
            check_pass_through(index, mount)?;
        }
    }
    Ok(entries)
}

fn check_pass_through(index: usize, mount: &Mount) -> Result<(), RewriteError> {
    match mount.typ().as_deref() {
        Some(typ) if PASS_THROUGH_TYPES.contains(&typ) => Ok(()),
        Some(typ) => Err(RewriteError::UnsupportedMountType {
            index,
            destination: mount.destination().clone(),
            typ: typ.to_owned(),
        }),
        None => Err(RewriteError::MountTypeMissing {
            index,
            destination: mount.destination().clone(),
        }),
    }
}

fn rewrite_bind(
    index: usize,
    mount: &mut Mount,
    bundle_dir: &Path,
    share: &ShareTarget,
) -> Result<ShareEntry, RewriteError> {
    let destination = mount.destination().clone();
    let source = mount
        .source()
        .as_ref()
        .ok_or_else(|| RewriteError::BindWithoutSource {
            index,
            destination: destination.clone(),
        })?;
    let host_path = resolve(bundle_dir, source);
    // Follows symlinks: what matters is what the bind will bind.
    let meta = fs::metadata(&host_path).map_err(|source| RewriteError::BindSourceMissing {
        index,
        destination: destination.clone(),
        path: host_path.clone(),
        source,
    })?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_file() {
        EntryKind::File
    } else {
        let kind = if ft.is_socket() {
            "socket"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device (use linux.devices)"
        } else if ft.is_block_device() {
            "block device (use linux.devices)"
        } else {
            "special file"
        };
        return Err(RewriteError::UnsupportedBindSource {
            index,
            destination,
            path: host_path,
            kind,
        });
    };
    let subpath = format!(
        "{}/mounts/{index}{}",
        share.container_dir,
        name_component(&host_path)
    );
    let location = ShareLocation::new(&share.tag, subpath)?;
    mount.set_source(Some(location.guest_path()?));
    Ok(ShareEntry {
        host_path,
        location,
        kind,
        readonly: has_option(mount, &["ro"]),
        recursive: has_option(mount, &["rbind"]),
        purpose: EntryPurpose::BindMount { index, destination },
    })
}

/// `/<file name>` with anything but `[A-Za-z0-9._-]` replaced (`3/resolv.conf`); empty
/// when the path has no file name. The share entry keeps the source's own name, because
/// the guest's mountinfo shows it as the bind mount's root and tools that compare a bind
/// mount with its source (runtime-tools' runtimetest) match on that base name.
pub(super) fn name_component(path: &Path) -> String {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
        return String::new();
    };
    let clean: String = name
        .chars()
        .take(MAX_NAME_SUFFIX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/{clean}")
}
