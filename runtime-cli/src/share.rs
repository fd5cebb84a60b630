//! The sandbox's virtio-fs share on the host: `<root>/<id>/share`, with the rootfs
//! and each bind source bind-mounted at the subpath the spec rewrite chose.
//!
//! Each mount made is recorded (in the state, before the next is tried) so that
//! teardown unmounts exactly those. The state directory is only removed once no mount
//! is left under it: removing it through a live bind mount would delete the user's
//! files.

use std::path::{Path, PathBuf};

use agent_protocol::rewrite::{EntryKind, EntryPurpose, ShareEntry};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("share entry {}: {source}", subpath)]
    Location {
        subpath: String,
        source: agent_protocol::ShareError,
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
    #[error("{} is still mounted; refusing to remove {}", mounted.display(), dir.display())]
    StillMounted { mounted: PathBuf, dir: PathBuf },
}

/// Bind-mounts every entry under `share_dir`; `made` gets each mount point as soon as
/// it is mounted (also on error, for the caller's cleanup).
pub fn arrange(
    share_dir: &Path,
    entries: &[ShareEntry],
    made: &mut Vec<PathBuf>,
) -> Result<(), ShareError> {
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
        let mut flags = MsFlags::MS_BIND;
        if e.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(&e.host_path),
            &target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|source| ShareError::Mount {
            from: e.host_path.clone(),
            to: target.clone(),
            source,
        })?;
        made.push(target.clone());
        // The rootfs stays writable on the host side even with `root.readonly`: the
        // guest creates mount points in it before it makes it read-only, as runc does.
        if e.readonly && e.purpose != EntryPurpose::Rootfs {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|source| ShareError::Mount {
                from: e.host_path.clone(),
                to: target.clone(),
                source,
            })?;
        }
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
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
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
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use agent_protocol::ShareLocation;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn bind_file_and_directory_then_unmount_and_remove() {
        if !root() {
            eprintln!("skipping: needs root for bind mounts");
            return;
        }
        let t = TempDir::new("share");
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("rootfs")).unwrap();
        std::fs::write(src.join("rootfs/hello"), "hi").unwrap();
        std::fs::write(src.join("hosts"), "127.0.0.1 x").unwrap();
        let share = t.path().join("state/share");
        let entries = vec![
            ShareEntry {
                host_path: src.join("rootfs"),
                location: ShareLocation::new("runv", "c1/rootfs").unwrap(),
                kind: EntryKind::Directory,
                readonly: true,
                recursive: false,
                purpose: EntryPurpose::Rootfs,
            },
            ShareEntry {
                host_path: src.join("hosts"),
                location: ShareLocation::new("runv", "c1/mounts/0/hosts").unwrap(),
                kind: EntryKind::File,
                readonly: true,
                recursive: false,
                purpose: EntryPurpose::BindMount {
                    index: 0,
                    destination: "/etc/hosts".into(),
                },
            },
        ];
        let mut made = vec![];
        arrange(&share, &entries, &mut made).unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(
            std::fs::read_to_string(share.join("c1/rootfs/hello")).unwrap(),
            "hi"
        );
        assert_eq!(
            std::fs::read_to_string(share.join("c1/mounts/0/hosts")).unwrap(),
            "127.0.0.1 x"
        );
        assert!(std::fs::write(share.join("c1/mounts/0/hosts"), "x").is_err());
        // The rootfs stays writable (the guest makes it read-only); a read-only bind
        // is read-only on the host side too.
        std::fs::write(share.join("c1/rootfs/new"), "x").unwrap();
        std::fs::remove_file(share.join("c1/rootfs/new")).unwrap();
        let state = t.path().join("state");
        assert!(matches!(
            remove_state_dir(&state),
            Err(ShareError::StillMounted { .. })
        ));
        assert!(unmount_all(&made).is_empty());
        remove_state_dir(&state).unwrap();
        assert!(!state.exists());
        // The user's files are untouched.
        assert_eq!(
            std::fs::read_to_string(src.join("rootfs/hello")).unwrap(),
            "hi"
        );
    }

    #[test]
    fn a_missing_source_fails_and_records_nothing() {
        if !root() {
            eprintln!("skipping: needs root for bind mounts");
            return;
        }
        let t = TempDir::new("share-missing");
        let entries = vec![ShareEntry {
            host_path: t.path().join("absent"),
            location: ShareLocation::new("runv", "c1/rootfs").unwrap(),
            kind: EntryKind::Directory,
            readonly: false,
            recursive: false,
            purpose: EntryPurpose::Rootfs,
        }];
        let mut made = vec![];
        let e = arrange(&t.path().join("share"), &entries, &mut made).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        assert!(made.is_empty());
    }
}
