//! Path handling confined to a root directory, as containerd's `fs.RootPath` does: every
//! symlink met on the way is resolved as if the root were `/`, so `..` and absolute link
//! targets can never lead out of it.
//!
//! Resolution is by path, component by component with `lstat`/`readlink`. That is sound
//! here because the trees it walks (a layer being unpacked, a rootfs being assembled) are
//! private directories of the store that only the unpacking thread writes to; nothing can
//! swap a component for a symlink between the check and the use.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up (Linux's own limit is 40 per
/// lookup; containerd allows 255).
const MAX_SYMLINKS: usize = 255;

/// Why a path could not be taken or resolved.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("entry path {0:?} climbs out of the root with '..'")]
    Escapes(PathBuf),
    #[error("entry path {0:?} is not valid")]
    Invalid(PathBuf),
    #[error("too many symlinks while resolving {0:?} inside the root")]
    Loop(PathBuf),
    #[error("resolving {path:?} inside {root:?}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Normalises an archive entry name into plain components relative to the root: a leading
/// `/` is dropped (absolute names are taken relative to the root), `.` is dropped, `a/..`
/// cancels out, and a `..` that would climb above the root is an error.
pub fn clean_entry_path(name: &Path) -> Result<Vec<OsString>, PathError> {
    let mut out: Vec<OsString> = Vec::new();
    for c in name.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => return Err(PathError::Invalid(name.to_path_buf())),
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(PathError::Escapes(name.to_path_buf()));
                }
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    Ok(out)
}

/// Joins components into a relative path.
pub fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// Resolves `rel` (clean components) inside `root`, following every symlink, including the
/// last component, within the root. Returns the resolved components; the tail that does
/// not exist yet is kept as given. The result never contains a symlink among its existing
/// components and never names anything outside `root`.
pub fn resolve_in_root(root: &Path, rel: &[OsString]) -> Result<Vec<OsString>, PathError> {
    let mut todo: VecDeque<OsString> = rel.iter().cloned().collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    let mut missing = false;
    while let Some(c) = todo.pop_front() {
        if c == OsStr::new(".") || c.is_empty() {
            continue;
        }
        if c == OsStr::new("..") {
            // Only reachable through a symlink target: clamp at the root.
            done.pop();
            continue;
        }
        if missing {
            done.push(c);
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&done);
        candidate.push(&c);
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = true;
                done.push(c);
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                // A regular file in the middle of the path: callers see the path as missing
                // and fail when they try to create through it.
                missing = true;
                done.push(c);
                continue;
            }
            Err(source) => {
                return Err(PathError::Io {
                    root: root.to_path_buf(),
                    path: join(rel),
                    source,
                })
            }
        };
        if !meta.file_type().is_symlink() {
            done.push(c);
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(PathError::Loop(join(rel)));
        }
        let target = std::fs::read_link(&candidate).map_err(|source| PathError::Io {
            root: root.to_path_buf(),
            path: join(rel),
            source,
        })?;
        if target.is_absolute() {
            done.clear();
        }
        for tc in target.components().rev() {
            match tc {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => todo.push_front(OsString::from("..")),
                Component::Normal(n) => todo.push_front(n.to_os_string()),
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(s: &str) -> Vec<OsString> {
        clean_entry_path(Path::new(s)).unwrap()
    }

    #[test]
    fn cleans_entry_names() {
        assert_eq!(join(&comps("/etc/passwd")), Path::new("etc/passwd"));
        assert_eq!(join(&comps("./a/./b/../c")), Path::new("a/c"));
        assert!(comps("./").is_empty());
        for bad in ["../x", "a/../../x", "/../etc"] {
            let err = clean_entry_path(Path::new(bad)).unwrap_err();
            assert!(matches!(err, PathError::Escapes(_)), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        symlink("/run", root.join("var/run")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/etc/../../../tmp", root.join("abs")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        assert_eq!(
            join(&resolve_in_root(root, &comps("var/run/x")).unwrap()),
            Path::new("run/x")
        );
        assert_eq!(
            join(&resolve_in_root(root, &comps("up/etc")).unwrap()),
            Path::new("etc")
        );
        assert_eq!(
            join(&resolve_in_root(root, &comps("abs/f")).unwrap()),
            Path::new("tmp/f")
        );
        assert!(matches!(
            resolve_in_root(root, &comps("loop1/x")),
            Err(PathError::Loop(_))
        ));
    }
}
