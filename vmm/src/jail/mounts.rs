//! The jail's file system: a read-only tmpfs root with each exposed path bound at its
//! host path, a procfs of the VMM's PID namespace, and `pivot_root` into it.

use super::{Access, Error, Exposed};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the jail's root is mounted before `pivot_root` (inside the VMM's own mount
/// namespace, so the host never sees it). What it covers was opened before.
const STAGING: &str = "/tmp";
/// Size of the jail's root tmpfs: it holds empty directories and mount-point files only.
const ROOT_TMPFS_OPTIONS: &str = "mode=0755,size=64k,nr_inodes=256";

fn cstr(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Path {
        path: path.into(),
        reason: "has a NUL byte".into(),
    })
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), Error> {
    let source_c = source.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype_c = fstype.map(|t| CString::new(t).expect("no NUL in a file system type"));
    let data_c = data.map(|d| CString::new(d).expect("no NUL in mount options"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null
    // where mount(2) allows it.
    let rc = unsafe {
        libc::mount(
            ptr(&source_c),
            target_c.as_ptr(),
            ptr(&fstype_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    if rc != 0 {
        return Err(Error::sys(format!(
            "mounting {} on {} (flags {flags:#x})",
            source.map_or_else(
                || fstype.unwrap_or("-").to_string(),
                |s| s.display().to_string()
            ),
            target.display()
        )));
    }
    Ok(())
}

/// Opens each exposed path (`O_PATH`, following symlinks as the VMM would), creating
/// the files marked `create`. Fails naming the first path that is missing.
fn open_sources(exposed: &[Exposed]) -> Result<Vec<File>, Error> {
    exposed
        .iter()
        .map(|e| {
            let err = |source: std::io::Error| Error::Sys {
                what: format!("opening {}", e.path.display()),
                source,
            };
            if e.create {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&e.path)
                    .map_err(err)?;
            }
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&e.path)
                .map_err(err)
        })
        .collect()
}

/// In a new mount, IPC and UTS namespace: builds the jail's root from `exposed` and
/// pivots into it.
pub fn build_and_pivot(exposed: &[Exposed]) -> Result<(), Error> {
    // SAFETY: unshare has no memory effects; the process is single-threaded here (a
    // mount namespace cannot be unshared otherwise).
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) } != 0 {
        return Err(Error::sys("unshare(mount, IPC, UTS namespaces)"));
    }
    let name = b"runv-vmm";
    // SAFETY: the buffer and its length are valid for the call.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(Error::sys("sethostname in the new UTS namespace"));
    }
    // Nothing this namespace mounts propagates to the host; the host's mounts still
    // propagate in (a share's later submounts).
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )?;
    // Opened in this namespace (a bind source must be in the caller's), before the
    // jail's root covers some of the tree; mounted from these fds.
    let sources = open_sources(exposed)?;
    let root = Path::new(STAGING);
    mount(
        Some(Path::new("runv-vmm-jail")),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(ROOT_TMPFS_OPTIONS),
    )?;
    for (e, src) in exposed.iter().zip(&sources) {
        bind_exposed(root, e, src)?;
    }
    let proc_dir = root.join("proc");
    make_dir(&proc_dir)?;
    // This PID namespace's procfs, read-only: the VMM reopens files through
    // /proc/self/fd and reads /proc/self/mountinfo; nothing under /proc/sys is writable.
    mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
        None,
    )?;
    pivot(root)?;
    drop(sources);
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(ROOT_TMPFS_OPTIONS),
    )
}

/// Binds `e` (opened as `src`) at its path under `root`, then applies its flags.
fn bind_exposed(root: &Path, e: &Exposed, src: &File) -> Result<(), Error> {
    let target = under(root, &e.path);
    let is_dir = src
        .metadata()
        .map_err(|source| Error::Sys {
            what: format!("stat {}", e.path.display()),
            source,
        })?
        .is_dir();
    if let Some(parent) = target.parent() {
        make_dir(parent)?;
    }
    if is_dir {
        make_dir(&target)?;
    } else if !target.exists() {
        File::create(&target).map_err(|source| Error::Sys {
            what: format!("creating the mount point {}", target.display()),
            source,
        })?;
    }
    let fd_path = PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
    let rec = if e.recursive { libc::MS_REC } else { 0 };
    mount(Some(&fd_path), &target, None, libc::MS_BIND | rec, None)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
    if !e.device {
        flags |= libc::MS_NODEV;
    }
    if e.access == Access::ReadOnly {
        flags |= libc::MS_RDONLY;
    }
    mount(None, &target, None, flags, None)?;
    if e.recursive {
        mount(None, &target, None, libc::MS_REC | libc::MS_SLAVE, None)?;
    }
    Ok(())
}

/// `path` (absolute) placed under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn make_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| Error::Sys {
            what: format!("creating {}", dir.display()),
            source,
        })
}

/// `pivot_root` into `root` and detach the old root.
fn pivot(root: &Path) -> Result<(), Error> {
    std::env::set_current_dir(root).map_err(|source| Error::Sys {
        what: format!("chdir {}", root.display()),
        source,
    })?;
    let dot = c".";
    // SAFETY: pivot_root with "." for both: the old root is stacked under the new one
    // and unmounted right after; the strings are valid C strings.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(Error::sys(format!("pivot_root into {}", root.display())));
    }
    // SAFETY: detaches the old root stacked on "."; a valid C string.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(Error::sys("detaching the host's root"));
    }
    std::env::set_current_dir("/").map_err(|source| Error::Sys {
        what: "chdir / in the jail".into(),
        source,
    })
}
