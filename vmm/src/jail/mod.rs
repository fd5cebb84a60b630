//! The jail runv-vmm puts itself in before it touches guest input (`--jail`), as
//! Firecracker's jailer does for Firecracker, but done by the VMM itself so there is
//! one binary and no path rewriting:
//!
//! 1. [`supervise`]: a new PID namespace. The process runv started stays outside it as a
//!    small supervisor (no capabilities, its own seccomp filter) that waits for the VMM,
//!    reports its exit status as its own and turns SIGTERM/SIGINT/SIGHUP into the VMM's
//!    SIGKILL; the VMM is PID 1 inside and dies with the supervisor (PDEATHSIG).
//! 2. [`mounts`]: new mount, IPC and UTS namespaces; a read-only tmpfs root holding, at
//!    their host paths, only what the VM is made of: the kernel and initrd (read-only),
//!    the shares (recursive, slave: later host mounts appear), block images, the vsock
//!    socket's directory, the console file, `/dev/kvm`, and a read-only procfs of the new
//!    PID namespace. `pivot_root` into it and the host's tree is detached.
//! 3. [`caps`]: no_new_privs, rlimits (no core dumps of guest memory; open files capped),
//!    and every capability but the few the virtio-fs server needs to act for guest root,
//!    dropped from every set including the bounding set.
//!
//! Each step happens while the process is single-threaded, before any device or vCPU
//! thread exists, so every thread inherits all of it.

pub mod caps;
pub mod mounts;
pub mod supervise;

use crate::config::{Console, VmConfig};
use std::path::{Component, Path, PathBuf};

/// The device node the VMM opens.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// Open files (and so virtio-fs inodes, each held as an `O_PATH` fd) a jailed VMM may
/// hold when `--open-files` is not given: virtiofsd's default.
pub const DEFAULT_OPEN_FILES: u64 = 1 << 20;

/// A failure to build the jail, naming the step and its input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path handed to the VMM cannot be placed in the jail.
    #[error("jail: {path}: {reason}")]
    Path {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("jail: {what}: {source}")]
    Sys {
        /// What was being done, with its input.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn sys(what: impl Into<String>) -> Self {
        Error::Sys {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        }
    }
}

/// How a path is exposed in the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mounted read-only.
    ReadOnly,
    /// Mounted writable.
    ReadWrite,
}

/// One host path the VMM needs, mounted at the same path inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// Absolute, without `..`.
    pub path: PathBuf,
    /// Read-only or writable.
    pub access: Access,
    /// Directory trees with submounts (the shares): bound recursively, as slaves.
    pub recursive: bool,
    /// A device node (only `/dev/kvm`): the one mount without `nodev`.
    pub device: bool,
    /// Created (empty, mode 0600) before it is bound if missing: the console file.
    pub create: bool,
}

impl Exposed {
    fn new(path: &Path, access: Access) -> Result<Self, Error> {
        Ok(Exposed {
            path: jail_path(path)?,
            access,
            recursive: false,
            device: false,
            create: false,
        })
    }
}

/// Everything the jail is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSpec {
    /// What is visible inside, in the order it is mounted (parents first).
    pub exposed: Vec<Exposed>,
    /// RLIMIT_NOFILE (soft and hard).
    pub open_files: u64,
}

impl JailSpec {
    /// The jail for `config`: its kernel, initrd, shares, images, vsock directory and
    /// console file, and `/dev/kvm`.
    pub fn for_vm(config: &VmConfig, open_files: u64) -> Result<Self, Error> {
        let mut exposed = vec![Exposed {
            device: true,
            ..Exposed::new(Path::new(KVM_DEVICE), Access::ReadWrite)?
        }];
        exposed.push(Exposed::new(&config.kernel, Access::ReadOnly)?);
        if let Some(initrd) = &config.initrd {
            exposed.push(Exposed::new(initrd, Access::ReadOnly)?);
        }
        for fs in &config.fs {
            let access = if fs.read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            exposed.push(Exposed {
                recursive: true,
                ..Exposed::new(&fs.path, access)?
            });
        }
        for b in &config.block {
            let access = if b.read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            exposed.push(Exposed::new(&b.path, access)?);
        }
        if let Some(vsock) = &config.vsock {
            // The VMM makes its socket there and connects to the `<uds>_<port>`
            // listeners of runv's shims beside it.
            let uds = jail_path(&vsock.uds)?;
            let dir = uds
                .parent()
                .filter(|d| *d != Path::new("/"))
                .ok_or_else(|| Error::Path {
                    path: vsock.uds.clone(),
                    reason:
                        "a jailed VMM's vsock socket must be in a directory of its own, not in /"
                            .into(),
                })?;
            exposed.push(Exposed::new(dir, Access::ReadWrite)?);
        }
        if let Console::File(path) = &config.console {
            exposed.push(Exposed {
                create: true,
                ..Exposed::new(path, Access::ReadWrite)?
            });
        }
        // Parents before what is inside them, so an inner mount is not hidden.
        exposed.sort_by_key(|e| e.path.components().count());
        for (i, e) in exposed.iter().enumerate() {
            if exposed[..i].iter().any(|o| o.path == e.path) {
                return Err(Error::Path {
                    path: e.path.clone(),
                    reason: "given twice to the VMM".into(),
                });
            }
        }
        Ok(JailSpec {
            exposed,
            open_files,
        })
    }
}

/// Makes every path of `config` absolute, as the jail binds them: inside the jail the
/// working directory is its root, where a relative path would not be found.
pub fn absolute_paths(config: &mut VmConfig) -> Result<(), Error> {
    config.kernel = jail_path(&config.kernel)?;
    if let Some(initrd) = &mut config.initrd {
        *initrd = jail_path(initrd)?;
    }
    for fs in &mut config.fs {
        fs.path = jail_path(&fs.path)?;
    }
    for b in &mut config.block {
        b.path = jail_path(&b.path)?;
    }
    if let Some(vsock) = &mut config.vsock {
        vsock.uds = jail_path(&vsock.uds)?;
    }
    if let Console::File(path) = &mut config.console {
        *path = jail_path(path)?;
    }
    Ok(())
}

/// `path` made absolute (against the working directory) and checked: no `..`, not `/`.
pub fn jail_path(path: &Path) -> Result<PathBuf, Error> {
    let abs = std::path::absolute(path).map_err(|e| Error::Path {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => clean.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Path {
                    path: path.into(),
                    reason: "has a `..` component: give the VMM a plain path".into(),
                })
            }
        }
    }
    if clean == Path::new("/") {
        return Err(Error::Path {
            path: path.into(),
            reason: "the host's root cannot be put in the jail".into(),
        });
    }
    Ok(clean)
}

/// Builds the jail and enters it. Returns in the jailed VMM (PID 1 of its namespace);
/// the process that called it stays outside as the supervisor and never returns.
pub fn enter(spec: &JailSpec) -> Result<(), Error> {
    supervise::fork_into_pid_namespace()?;
    mounts::build_and_pivot(&spec.exposed)?;
    caps::limit(spec.open_files)?;
    caps::drop_all_but_vmm()?;
    Ok(())
}

#[cfg(test)]
mod tests;
