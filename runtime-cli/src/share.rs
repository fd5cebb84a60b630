//! The sandbox's virtio-fs share on the host: `<root>/<id>/share`, with the rootfs
//! and each bind source bind-mounted at the subpath the spec rewrite chose.
//!
//! Each mount made is recorded (in the state, before the next is tried) so that
//! teardown unmounts exactly those. The state directory is only removed once no mount
//! is left under it: removing it through a live bind mount would delete the user's
//! files.
//!
//! The guest is root over the share, so what it leaves there (a setuid-root binary, a
//! device node) must not be usable on the host (docs/security.md): the share directory
//! is private (0700), and every mount runv makes is `nosuid,nodev`, each submount of a
//! recursive bind too, and a read-only entry is read-only in every submount. With the
//! new mount API (Linux 5.12) the bind is cloned detached (`open_tree`), restricted
//! (`mount_setattr`, `AT_RECURSIVE`) and only then attached (`move_mount`), so it is never
//! visible, nor propagated to a peer mount, without its flags. Older kernels: `mount`,
//! then a bind remount of the mount and each submount found in `/proc/self/mountinfo`.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::rewrite::{EntryKind, EntryPurpose, ShareEntry};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

/// The share directory: only root (the VMM) goes in.
pub const SHARE_DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("share entry {}: {source}", subpath)]
    Location {
        subpath: String,
        source: runv_agent_protocol::ShareError,
    },
    #[error("preparing {}: {source}", path.display())]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind mounting {} on {}: {source}", from.display(), to.display())]
    Mount {
        from: PathBuf,
        to: PathBuf,
        source: nix::Error,
    },
    #[error("making the mount at {} {flags}: {source}", path.display())]
    Restrict {
        path: PathBuf,
        flags: &'static str,
        source: nix::Error,
    },
    #[error("{} is still mounted; refusing to remove {}", mounted.display(), dir.display())]
    StillMounted { mounted: PathBuf, dir: PathBuf },
}

/// How the bind mounts are made; `Auto` unless a test forces the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountApi {
    /// `open_tree` + `mount_setattr` + `move_mount`, else `Remount`.
    Auto,
    /// `mount(MS_BIND)`, then a bind remount of each (sub)mount (what `Auto` falls
    /// back to; only the tests ask for it directly).
    #[cfg_attr(not(test), allow(dead_code))]
    Remount,
}

/// Bind-mounts every entry under `share_dir`; `made` gets each mount point as soon as
/// it is mounted (also on error, for the caller's cleanup).
///
/// `share_dir` is made (if missing) and set to mode 0700 first.
pub fn arrange(
    share_dir: &Path,
    entries: &[ShareEntry],
    made: &mut Vec<PathBuf>,
) -> Result<(), ShareError> {
    arrange_with(share_dir, entries, made, MountApi::Auto)
}

fn arrange_with(
    share_dir: &Path,
    entries: &[ShareEntry],
    made: &mut Vec<PathBuf>,
    api: MountApi,
) -> Result<(), ShareError> {
    make_private(share_dir)?;
    for e in entries {
        let target = e
            .location
            .host_path(share_dir)
            .map_err(|source| ShareError::Location {
                subpath: e.location.subpath.clone(),
                source,
            })?;
        let prep = |source| ShareError::Prepare {
            path: target.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(prep)?;
        }
        match e.kind {
            EntryKind::Directory => std::fs::create_dir_all(&target).map_err(prep)?,
            EntryKind::File => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&target)
                    .map_err(prep)?;
            }
        }
        // The rootfs stays writable on the host side even with `root.readonly`: the
        // guest creates mount points in it before it makes it read-only, as runc does.
        let readonly = e.readonly && e.purpose != EntryPurpose::Rootfs;
        bind(&e.host_path, &target, e.recursive, readonly, api, made)?;
    }
    Ok(())
}

/// Unmounts `made` in reverse order (lazily: a file the VMM still holds does not
/// block it). Returns a warning per failure other than "not mounted".
pub fn unmount_all(made: &[PathBuf]) -> Vec<String> {
    let mut warnings = Vec::new();
    for target in made.iter().rev() {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => warnings.push(format!("unmounting {}: {e}", target.display())),
        }
    }
    warnings
}

/// Mount points at or under `dir` in this mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    parse_mount_points(&text)
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// The mount point (field 5) of each mountinfo line, unescaped (the kernel writes
/// space, tab, newline and backslash as `\ooo`).
fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(mount_point_path)
        .collect()
}

/// A mountinfo mount point field as a path: the kernel writes space, tab, newline and
/// backslash as `\ooo`; every other byte stands for itself (not necessarily UTF-8).
pub(crate) fn mount_point_path(field: &str) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(field)))
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// Makes `share_dir` if it is missing and sets it to [`SHARE_DIR_MODE`]; refuses
/// anything but a directory (a symlink there is not followed).
fn make_private(share_dir: &Path) -> Result<(), ShareError> {
    let prep = |source| ShareError::Prepare {
        path: share_dir.into(),
        source,
    };
    match std::fs::DirBuilder::new()
        .mode(SHARE_DIR_MODE)
        .create(share_dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(prep(e)),
    }
    let meta = std::fs::symlink_metadata(share_dir).map_err(prep)?;
    if !meta.is_dir() {
        return Err(prep(std::io::Error::other("not a directory")));
    }
    std::fs::set_permissions(share_dir, std::fs::Permissions::from_mode(SHARE_DIR_MODE))
        .map_err(prep)
}

/// Binds `source` on `target` (recursively with `recursive`), `nosuid,nodev` and with
/// `readonly` read-only, every submount included; `made` gets `target` once mounted.
fn bind(
    source: &Path,
    target: &Path,
    recursive: bool,
    readonly: bool,
    api: MountApi,
    made: &mut Vec<PathBuf>,
) -> Result<(), ShareError> {
    let mount_err = |source_err| ShareError::Mount {
        from: source.into(),
        to: target.into(),
        source: source_err,
    };
    if api == MountApi::Auto {
        match detached_bind(source, target, recursive, readonly) {
            Ok(true) => {
                made.push(target.into());
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(mount_err(e)),
        }
    }
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(mount_err)?;
    made.push(target.into());
    // A bind ignores the other flags: each mount of the new tree is remounted with them.
    // The submounts are what mountinfo shows under the (fresh, empty) target.
    let points = if recursive {
        mounts_under(target)
    } else {
        vec![target.into()]
    };
    for point in points {
        remount_restricted(&point, readonly)?;
    }
    Ok(())
}

/// The new mount API: Ok(false) when the kernel (or a seccomp filter) lacks it.
fn detached_bind(
    source: &Path,
    target: &Path,
    recursive: bool,
    readonly: bool,
) -> Result<bool, nix::Error> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL);
    let (source, target) = (c(source)?, c(target)?);
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads the NUL-terminated path and returns a new fd (or -1),
    // which is owned below and by nothing else.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    if fd < 0 {
        return match nix::Error::last() {
            nix::Error::ENOSYS | nix::Error::EPERM => Ok(false),
            e => Err(e),
        };
    }
    // SAFETY: `fd` was just returned by open_tree and is not owned elsewhere.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let mut attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if readonly {
        attr.attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads the empty NUL-terminated path and `attr`, whose size
    // is passed; `tree` is a live detached mount fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            c"".as_ptr(),
            at,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        // Linux 5.2 to 5.11 has open_tree but not mount_setattr; closing the fd
        // drops the detached copy.
        return match nix::Error::last() {
            nix::Error::ENOSYS | nix::Error::EPERM => Ok(false),
            e => Err(e),
        };
    }
    // SAFETY: move_mount reads the two NUL-terminated paths; `tree` is a live detached
    // mount fd; the target's last component is not followed if it is a symlink.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    Ok(true)
}

/// Bind-remounts the mount at `point` `nosuid,nodev` (and read-only), keeping the
/// flags it has (a bind remount sets them all: `noexec` would otherwise be lost).
fn remount_restricted(point: &Path, readonly: bool) -> Result<(), ShareError> {
    let what = if readonly {
        "nosuid,nodev,ro"
    } else {
        "nosuid,nodev"
    };
    let fail = |source| ShareError::Restrict {
        path: point.into(),
        flags: what,
        source,
    };
    let have = statvfs(point).map_err(fail)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, point, None::<&str>, flags, None::<&str>).map_err(fail)
}

/// Removes the container's state directory, after checking that nothing is mounted
/// under it.
pub fn remove_state_dir(dir: &Path) -> Result<(), ShareError> {
    if let Some(m) = mounts_under(dir).into_iter().next() {
        return Err(ShareError::StillMounted {
            mounted: m,
            dir: dir.into(),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ShareError::Prepare {
            path: dir.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
