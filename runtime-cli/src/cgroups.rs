//! The host cgroup of a sandbox: `linux.cgroupsPath` holds the VMM and the shims.
//!
//! Every mounted hierarchy is used: each cgroup v1 controller hierarchy (this host runs
//! the hybrid layout) and the v2 unified one, as runc's cgroupfs driver does. The
//! systemd form `slice:prefix:name` becomes `<slice>/<prefix>-<name>.scope` (no
//! systemd call is made). The limits of `linux.resources` are applied in the guest; on
//! the host runv sets the sandbox's own bounds ([`Limits`]): memory (guest RAM plus the
//! host overhead) and tasks. In a v2 hierarchy the memory and pids controllers are
//! enabled down the path first, as runc does. A hierarchy that refuses (read-only, no
//! permission, an ancestor holding processes) is a warning, not a failure.

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

/// The host bounds of a sandbox's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` (v2) / `memory.limit_in_bytes` (v1).
    pub memory_bytes: u64,
    /// `pids.max`.
    pub pids: u64,
}

/// Creates the cgroup in every hierarchy, sets `limits` and moves `pids` into it.
/// Returns the cgroup's directories (to join and to remove on delete) and a warning
/// per hierarchy or limit that refused.
pub fn place(
    hierarchies: &[Hierarchy],
    rel: &Path,
    pids: &[i32],
    limits: Limits,
) -> (Vec<PathBuf>, Vec<String>) {
    let mut dirs = Vec::new();
    let mut warnings = Vec::new();
    let mut memory_limited = false;
    for h in hierarchies {
        let dir = h.mount_point.join(rel);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            warnings.push(format!("host cgroup {}: {e}", dir.display()));
            continue;
        }
        if h.fs_type == "cgroup2" {
            warnings.extend(enable_controllers(&h.mount_point, rel));
        } else {
            warnings.extend(inherit_cpuset(&h.mount_point, rel));
        }
        for (file, value) in [
            ("memory.max", limits.memory_bytes),
            ("memory.limit_in_bytes", limits.memory_bytes),
            ("pids.max", limits.pids),
        ] {
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => memory_limited |= file.starts_with("memory."),
                Err(e) => warnings.push(format!("host cgroup {}: {e}", path.display())),
            }
        }
        dirs.push(dir.clone());
        for pid in pids {
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                warnings.push(format!(
                    "host cgroup {}: adding pid {pid}: {e}",
                    dir.display()
                ));
            }
        }
    }
    if !memory_limited && !hierarchies.is_empty() {
        warnings.push(format!(
            "host cgroup {}: no memory controller took the limit; the sandbox's host \
             memory is bounded only by its guest RAM",
            rel.display()
        ));
    }
    (dirs, warnings)
}

/// Enables the memory and pids controllers (where available) in `cgroup.subtree_control`
/// of every ancestor of `rel` below `mount_point`, so that `rel` gets their files.
fn enable_controllers(mount_point: &Path, rel: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    // Outermost first: "", "a", "a/b" for a/b/c.
    let mut ancestors: Vec<&Path> = rel.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        let dir = mount_point.join(a);
        let control = dir.join("cgroup.subtree_control");
        for ctl in ["memory", "pids"] {
            if !lists(&dir.join("cgroup.controllers"), ctl) || lists(&control, ctl) {
                continue;
            }
            if let Err(e) = std::fs::write(&control, format!("+{ctl}")) {
                warnings.push(format!(
                    "host cgroup {}: enabling {ctl}: {e}",
                    control.display()
                ));
            }
        }
    }
    warnings
}

/// Whether a v2 controller list (`cgroup.controllers`, `cgroup.subtree_control`) names
/// `ctl`; a file that cannot be read names none.
pub fn lists(file: &Path, ctl: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| t.split_whitespace().any(|w| w == ctl))
}

/// A v1 cpuset cgroup starts with no CPU and no memory node, and takes no process until
/// it has some: each level of `rel` that is empty gets its parent's (as runc does).
fn inherit_cpuset(mount_point: &Path, rel: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut levels: Vec<&Path> = rel.ancestors().collect();
    levels.reverse();
    for pair in levels.windows(2) {
        let (parent, dir) = (mount_point.join(pair[0]), mount_point.join(pair[1]));
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let Ok(own) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            if !own.trim().is_empty() {
                continue;
            }
            let from = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
            if let Err(e) = std::fs::write(dir.join(file), from.trim()) {
                warnings.push(format!("host cgroup {}: {e}", dir.join(file).display()));
            }
        }
    }
    warnings
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

    const LIMITS: Limits = Limits {
        memory_bytes: 320 << 20,
        pids: 257,
    };

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
        // The v2 root offers memory and pids; the leaf's limit files are there.
        let v2 = t.path().join("b");
        std::fs::create_dir_all(v2.join("runv/c1")).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(v2.join("runv/cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(v2.join("runv/cgroup.subtree_control"), "memory\n").unwrap();
        for f in ["memory.max", "pids.max"] {
            std::fs::write(v2.join("runv/c1").join(f), "max\n").unwrap();
        }
        let (dirs, warnings) = place(&hs, Path::new("runv/c1"), &[42], LIMITS);
        assert!(warnings.is_empty(), "{warnings:?}");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(v2.join("cgroup.subtree_control")), "+pids");
        assert_eq!(read(v2.join("runv/cgroup.subtree_control")), "+pids");
        assert_eq!(read(v2.join("runv/c1/memory.max")), "335544320");
        assert_eq!(read(v2.join("runv/c1/pids.max")), "257");
        for f in ["memory.max", "pids.max"] {
            std::fs::remove_file(v2.join("runv/c1").join(f)).unwrap();
        }
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
        let (dirs, warnings) = place(&hs, Path::new("x"), &[1], LIMITS);
        assert!(dirs.is_empty());
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("file/x"), "{warnings:?}");
        assert!(warnings[1].contains("no memory controller"), "{warnings:?}");
    }

    #[test]
    fn an_existing_cgroup_is_joined_and_its_limits_set() {
        let t = tempfile::tempdir().unwrap();
        let hs = vec![Hierarchy {
            mount_point: t.path().into(),
            fs_type: "cgroup".into(),
        }];
        std::fs::create_dir(t.path().join("c")).unwrap();
        std::fs::write(t.path().join("c/memory.limit_in_bytes"), "").unwrap();
        let (dirs, warnings) = place(&hs, Path::new("c"), &[7], LIMITS);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(dirs, [t.path().join("c")]);
        assert_eq!(
            std::fs::read_to_string(t.path().join("c/memory.limit_in_bytes")).unwrap(),
            "335544320"
        );
    }

    /// On this host's own hierarchies (v1, v2 or both): a child process put in a
    /// sandbox cgroup sees the limits, and removing the cgroup leaves nothing.
    #[test]
    #[ignore = "needs root: writes the host's cgroup hierarchies"]
    fn root_the_limits_hold_in_the_host_hierarchies() {
        let hs = host_hierarchies();
        let rel = PathBuf::from(format!("runv-unit-{}/c", std::process::id()));
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let (dirs, warnings) = place(&hs, &rel, &[child.id() as i32], LIMITS);
        let read = |f: &str| {
            dirs.iter()
                .filter_map(|d| std::fs::read_to_string(d.join(f)).ok())
                .map(|t| t.trim().to_owned())
                .collect::<Vec<_>>()
        };
        let memory = [read("memory.max"), read("memory.limit_in_bytes")].concat();
        let pids = read("pids.max");
        let procs = read("cgroup.procs");
        child.kill().unwrap();
        child.wait().unwrap();
        let left = remove(&dirs);
        for h in &hs {
            let _ = std::fs::remove_dir(h.mount_point.join(rel.parent().unwrap()));
        }
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(
            !memory.is_empty() && memory.iter().all(|m| m == "335544320"),
            "{memory:?}"
        );
        assert!(
            !pids.is_empty() && pids.iter().all(|p| p == "257"),
            "{pids:?}"
        );
        assert!(
            procs.iter().all(|p| p == &child.id().to_string()),
            "{procs:?}"
        );
        assert!(left.is_empty(), "{left:?}");
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
