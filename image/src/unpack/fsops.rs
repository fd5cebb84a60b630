//! Small file-system operations shared by extraction and application: creating nodes
//! without following symlinks, and setting metadata.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};

/// Metadata carried from a tar header or a cached tree onto a new node.
#[derive(Debug, Clone)]
pub(crate) struct NodeMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: FileTime,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

impl NodeMeta {
    /// Reads the metadata of an existing node (not following a final symlink).
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::symlink_metadata(path)?;
        let mut xattrs = Vec::new();
        if let Ok(names) = xattr::list(path) {
            for name in names {
                if let Ok(Some(v)) = xattr::get(path, &name) {
                    xattrs.push((name, v));
                }
            }
        }
        Ok(Self {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: FileTime::from_last_modification_time(&m),
            xattrs,
        })
    }
}

/// Removes whatever is at `path` (a directory with its contents), if anything.
pub(crate) fn remove_existing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a new regular file; fails if anything (a symlink included) is already there.
pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates a directory with owner access so that entries can be written into it; its
/// final mode is set once everything below it is in place.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o755).create(path)
}

/// Makes a device node or FIFO.
pub(crate) fn make_node(path: &Path, kind: SFlag, dev: u64) -> io::Result<()> {
    nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(0o600), dev).map_err(io::Error::from)
}

/// Sets ownership (when `privileged`), mode (not for symlinks), xattrs and mtime.
/// Extended attributes the file system or our privileges refuse are skipped with a debug
/// line: an image is still usable without `security.*` labels.
pub(crate) fn set_meta(
    path: &Path,
    is_symlink: bool,
    meta: &NodeMeta,
    privileged: bool,
) -> io::Result<()> {
    if privileged {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    }
    for (name, value) in &meta.xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            tracing::debug!(path = %path.display(), xattr = ?name, error = %e, "xattr not set");
        }
    }
    if !is_symlink {
        // After chown, which clears set-id bits.
        nix::sys::stat::fchmodat(
            None,
            path,
            Mode::from_bits_truncate(meta.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io::Error::from)?;
    }
    filetime::set_symlink_file_times(path, meta.mtime, meta.mtime)
}

/// Removes a tree, first giving its directories owner write and search permission if a
/// plain removal fails (an unprivileged caller cannot empty a 0555 directory an image
/// shipped). A missing path is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    fn open_up(p: &Path) -> io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        if m.is_dir() {
            let mode = m.permissions().mode() | 0o700;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            for e in std::fs::read_dir(p)? {
                open_up(&e?.path())?;
            }
        }
        Ok(())
    }
    open_up(path)?;
    std::fs::remove_dir_all(path)
}
