//! virtio-fs served inside the VMM: a FUSE passthrough of one host directory per share,
//! `--fs tag=NAME,path=DIR[,ro]`, mounted in the guest with `mount -t virtiofs NAME /mnt`.
//!
//! * `device.rs`: the virtio side (config space with the tag, one hiprio and one request
//!   queue, activation).
//! * `handler.rs`: queue processing: each descriptor chain becomes a FUSE request for
//!   `fuse_backend_rs`'s `Server`; a malformed chain fails that request only.
//! * `gate.rs`: read-only enforcement around the passthrough.
//!
//! The file system is `fuse_backend_rs::passthrough::PassthroughFs`, configured by
//! [`passthrough_config`]; docs/virtio-fs.md explains the cache mode, how paths stay inside
//! the shared directory, and what is supported.

pub mod device;
#[cfg(test)]
mod fuzz_tests;
pub mod gate;
pub mod handler;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::options::{self, Key, Spec};
use std::time::Duration;

use fuse_backend_rs::api::filesystem::FsOptions;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};

pub use device::Fs;
pub use gate::WriteGate;
pub use handler::RequestHandler;

/// Longest tag (virtio 1.2, 5.11.4: 36 bytes, NUL-padded, no terminator when full).
pub const TAG_MAX: usize = 36;

/// How long the guest may trust attributes and directory entries: a host-side change is
/// seen within this time even when nothing reopens the file.
pub const METADATA_TIMEOUT: Duration = Duration::from_millis(500);

/// FUSE options asked for at INIT besides the passthrough's own (READDIRPLUS). Without
/// them the kernel falls back to one page per WRITE (no `BIG_WRITES`/`MAX_PAGES`: about
/// 20 times slower sequential writes) and serialises directory operations. Not asked for:
/// the writeback cache and zero-message open (the host may change files too), DAX,
/// `DONT_MASK` (the guest applies its umask; the passthrough runs with umask 0), locks
/// (the guest kernel keeps POSIX and flock locks itself), ioctl.
pub const FUSE_OPTIONS: FsOptions = FsOptions::ASYNC_READ
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::ATOMIC_O_TRUNC)
    .union(FsOptions::ASYNC_DIO)
    .union(FsOptions::AUTO_INVAL_DATA);

/// The file system a share serves.
pub type ShareFs = WriteGate<PassthroughFs<()>>;

/// One `--fs` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The name the guest mounts (`mount -t virtiofs TAG`).
    pub tag: String,
    /// The host directory shared.
    pub path: PathBuf,
    /// Refuse every write with `EROFS`.
    pub read_only: bool,
}

/// A share that cannot be set up, naming the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shared directory is missing or unreadable.
    #[error("virtio-fs {tag}: shared directory {path}: {source}")]
    Dir {
        /// The share's tag.
        tag: String,
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The shared path is not a directory.
    #[error("virtio-fs {tag}: {path} is not a directory")]
    NotDir {
        /// The share's tag.
        tag: String,
        /// The path.
        path: PathBuf,
    },
    /// The passthrough file system could not be created.
    #[error("virtio-fs {tag}: passthrough of {path}: {source}")]
    Passthrough {
        /// The share's tag.
        tag: String,
        /// The directory.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// `--fs tag=NAME,path=DIR[,ro]`.
pub const OPTION: Spec = Spec::new(
    "--fs",
    &[
        Key::required("tag", "NAME"),
        Key::required("path", "DIR"),
        Key::flag("ro"),
    ],
);

impl FromStr for FsConfig {
    type Err = options::Error;

    /// `tag=NAME,path=DIR[,ro]`, see [`OPTION`].
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let o = OPTION.parse(spec)?;
        let tag: String = o.required("tag")?;
        if tag.len() > TAG_MAX || tag.contains('\0') {
            return Err(o.invalid("tag", format!("a tag is 1 to {TAG_MAX} bytes without NUL")));
        }
        Ok(FsConfig {
            tag,
            path: o.required("path")?,
            read_only: o.flag("ro"),
        })
    }
}

impl FsConfig {
    /// The tag as the config space carries it: NUL-padded to [`TAG_MAX`] bytes.
    pub fn tag_bytes(&self) -> [u8; TAG_MAX] {
        let mut out = [0u8; TAG_MAX];
        let n = self.tag.len().min(TAG_MAX);
        out[..n].copy_from_slice(&self.tag.as_bytes()[..n]);
        out
    }

    /// The shared directory, absolute and with symlinks resolved, checked to be a directory.
    pub fn resolved_dir(&self) -> Result<PathBuf, Error> {
        let dir_err = |source| Error::Dir {
            tag: self.tag.clone(),
            path: self.path.clone(),
            source,
        };
        let dir = self.path.canonicalize().map_err(dir_err)?;
        if dir.to_str().is_none() {
            // The passthrough takes its root as a string.
            return Err(dir_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path is not valid UTF-8",
            )));
        }
        if !dir.metadata().map_err(dir_err)?.is_dir() {
            return Err(Error::NotDir {
                tag: self.tag.clone(),
                path: self.path.clone(),
            });
        }
        Ok(dir)
    }

    /// The FUSE server of this share: the passthrough of the directory behind the
    /// read-only gate. The root is opened when the guest sends FUSE_INIT.
    pub fn server(&self) -> Result<Server<ShareFs>, Error> {
        let dir = self.resolved_dir()?;
        raise_fd_limit();
        let fs = PassthroughFs::<()>::new(passthrough_config(&dir)).map_err(|source| {
            Error::Passthrough {
                tag: self.tag.clone(),
                path: dir.clone(),
                source,
            }
        })?;
        Ok(Server::new(WriteGate::new(fs, self.read_only)))
    }
}

/// Raises the soft limit of open files to the hard limit: the passthrough keeps one
/// `O_PATH` descriptor per inode the guest has looked up, and a guest walking a root
/// filesystem easily holds more than the usual soft limit of 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `lim`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur >= lim.rlim_max
    {
        return;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads only `lim`; raising the soft limit up to the hard one is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        tracing::warn!(
            "virtio-fs: raising the open-file limit to {}: {}",
            lim.rlim_max,
            io::Error::last_os_error()
        );
    }
}

/// How every share is served (docs/virtio-fs.md says why):
/// * `CachePolicy::Auto`: the guest page cache holds file data (needed for shared `mmap`,
///   which FUSE refuses on direct-I/O files before Linux 6.6), dropped on every open, so a
///   host-side edit is seen at the next open (close-to-open consistency);
/// * attributes and entries trusted for [`METADATA_TIMEOUT`] only;
/// * no writeback cache (the host may change files behind the guest's back);
/// * xattrs on; `O_DIRECT` from the guest ignored (the host file is opened without it).
pub fn passthrough_config(dir: &Path) -> Config {
    Config {
        // `resolved_dir` refuses non-UTF-8 paths, so nothing is lost here.
        root_dir: dir.to_string_lossy().into_owned(),
        cache_policy: CachePolicy::Auto,
        attr_timeout: METADATA_TIMEOUT,
        entry_timeout: METADATA_TIMEOUT,
        writeback: false,
        xattr: true,
        allow_direct_io: false,
        do_import: true,
        ..Config::default()
    }
}
