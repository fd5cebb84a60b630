//! The host cgroup of a sandbox: `linux.cgroupsPath` holds the VMM and the shims.
//!
//! Every mounted hierarchy is used: each cgroup v1 controller hierarchy (this host runs
//! the hybrid layout) and the v2 unified one, as runc's cgroupfs driver does. The
//! systemd form `slice:prefix:name` becomes `<slice>/<prefix>-<name>.scope` (no
//! systemd call is made). runv sets no limits on the host cgroup: the limits of
//! `linux.resources` are applied in the guest; the VM's memory size is what bounds the
//! sandbox on the host. A hierarchy that refuses (read-only, no permission) is a
//! warning, not a failure.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    pub fs_type: String,
}

/// The cgroup hierarchies in a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let fs_type = post.split(' ').next()?;
            (fs_type == "cgroup" || fs_type == "cgroup2").then(|| Hierarchy {
                mount_point: crate::share::mount_point_path(mount_point),
                fs_type: fs_type.to_owned(),
            })
        })
        .collect()
}

/// The relative cgroup path for `cgroups_path` (absolute or systemd form).
pub fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let bad = |reason| CgroupError::InvalidPath {
        path: cgroups_path.to_owned(),
        reason,
    };
    let rel = if !cgroups_path.starts_with('/') && cgroups_path.matches(':').count() == 2 {
        let mut parts = cgroups_path.splitn(3, ':');
        let slice = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            return Err(bad("systemd form slice:prefix:name without a name"));
        }
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        PathBuf::from(slice).join(unit)
    } else {
        PathBuf::from(cgroups_path.trim_start_matches('/'))
    };
    if rel.as_os_str().is_empty() {
        return Err(bad("names the root cgroup"));
    }
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad("must not contain '.' or '..'"));
    }
    Ok(rel)
}

/// Creates the cgroup in every hierarchy and moves `pids` into it. Returns the
/// directories made (to remove on delete) and a warning per hierarchy that refused.
pub fn place(hierarchies: &[Hierarchy], rel: &Path, pids: &[i32]) -> (Vec<PathBuf>, Vec<String>) {
    let mut dirs = Vec::new();
    let mut warnings = Vec::new();
    for h in hierarchies {
        let dir = h.mount_point.join(rel);
        let existed = dir.is_dir();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warnings.push(format!("host cgroup {}: {e}", dir.display()));
            continue;
        }
        if !existed {
            dirs.push(dir.clone());
        }
        for pid in pids {
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                warnings.push(format!(
                    "host cgroup {}: adding pid {pid}: {e}",
                    dir.display()
                ));
            }
        }
    }
    (dirs, warnings)
}

/// Adds `pid` to cgroups made earlier.
pub fn join(dirs: &[PathBuf], pid: i32) -> Vec<String> {
    dirs.iter()
        .filter_map(|d| {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())
                .err()
                .map(|e| format!("host cgroup {}: adding pid {pid}: {e}", d.display()))
        })
        .collect()
}

/// Removes the directories `place` made (retrying briefly while exiting processes
/// leave them). Returns a warning per directory that stays.
pub fn remove(dirs: &[PathBuf]) -> Vec<String> {
    let mut warnings = Vec::new();
    for d in dirs {
        let mut last = None;
        for _ in 0..50 {
            match std::fs::remove_dir(d) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some(e) = last {
            warnings.push(format!("removing host cgroup {}: {e}", d.display()));
        }
    }
    warnings
}

/// This host's hierarchies.
pub fn host_hierarchies() -> Vec<Hierarchy> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_hybrid() {
        let text = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,memory
";
        let h = parse_mountinfo(text);
        assert_eq!(
            h.iter()
                .map(|h| h.mount_point.to_str().unwrap())
                .collect::<Vec<_>>(),
            [
                "/sys/fs/cgroup/unified",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/with space"
            ]
        );
        assert_eq!(h[0].fs_type, "cgroup2");
    }

    #[test]
    fn paths() {
        assert_eq!(relative_path("/runv/c1").unwrap(), PathBuf::from("runv/c1"));
        assert_eq!(relative_path("runv/c1").unwrap(), PathBuf::from("runv/c1"));
        assert_eq!(
            relative_path("system.slice:docker:abc").unwrap(),
            PathBuf::from("system.slice/docker-abc.scope")
        );
        assert_eq!(
            relative_path(":cri:x").unwrap(),
            PathBuf::from("system.slice/cri-x.scope")
        );
        for bad in ["/", "", "/a/../b", "s:p:"] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn place_in_plain_directories_and_remove() {
        // Plain directories stand in for hierarchies: cgroup.procs becomes a file.
        let t = tempfile::tempdir().unwrap();
        let hs = vec![
            Hierarchy {
                mount_point: t.path().join("a"),
                fs_type: "cgroup".into(),
            },
            Hierarchy {
                mount_point: t.path().join("b"),
                fs_type: "cgroup2".into(),
            },
        ];
        let (dirs, warnings) = place(&hs, Path::new("runv/c1"), &[42]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(dirs.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap(),
            "42"
        );
        for d in &dirs {
            std::fs::remove_file(d.join("cgroup.procs")).unwrap();
        }
        assert!(remove(&dirs).is_empty());
        assert!(!dirs[0].exists() && !dirs[1].exists());
    }

    #[test]
    fn a_refusing_hierarchy_is_a_warning() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), "").unwrap();
        let hs = vec![Hierarchy {
            mount_point: t.path().join("file"),
            fs_type: "cgroup".into(),
        }];
        let (dirs, warnings) = place(&hs, Path::new("x"), &[1]);
        assert!(dirs.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("file/x"), "{warnings:?}");
    }
}
