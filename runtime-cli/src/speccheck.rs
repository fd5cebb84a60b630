//! Host-side checks of a bundle's spec that runc makes before it creates anything and
//! that the guest cannot make for us: namespace paths name host files, and whether a
//! network sysctl is allowed depends on the spec's network namespace, which the guest
//! spec no longer has (the container uses the VM's).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// `NS_GET_NSTYPE` (linux/nsfs.h: `_IO(0xb7, 0x3)`): the CLONE_NEW* type of an nsfs file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
pub enum SpecCheckError {
    #[error("linux.namespaces: {typ} namespace path {}: {reason}", path.display())]
    NamespacePath {
        typ: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("linux.sysctl: sysctl {key:?} not allowed in host network namespace")]
    HostNetworkSysctl { key: String },
}

/// Runs every check; the first failure is the error.
pub fn check(spec: &Spec) -> Result<(), SpecCheckError> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for ns in &namespaces {
        if let Some(path) = ns.path() {
            check_namespace_path(ns.typ(), path)?;
        }
    }
    // As runc: without a network namespace of its own (a new one or a path) the
    // container is in the host's, whose sysctls are not the container's to change.
    let has_netns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network);
    if !has_netns {
        if let Some(key) = linux
            .sysctl()
            .iter()
            .flat_map(|s| s.keys())
            .find(|k| is_net_sysctl(k))
        {
            return Err(SpecCheckError::HostNetworkSysctl { key: key.clone() });
        }
    }
    Ok(())
}

/// A sysctl of the network namespace (`net.*`, in dotted or slashed form).
pub fn is_net_sysctl(key: &str) -> bool {
    key.starts_with("net.") || key.starts_with("net/")
}

fn check_namespace_path(typ: LinuxNamespaceType, path: &Path) -> Result<(), SpecCheckError> {
    let (name, want) = clone_flag(typ);
    let fail = |reason: String| SpecCheckError::NamespacePath {
        typ: name,
        path: path.into(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open fd.
    let got = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if got < 0 {
        let e = std::io::Error::last_os_error();
        return Err(fail(if e.raw_os_error() == Some(libc::ENOTTY) {
            "not a namespace file".into()
        } else {
            e.to_string()
        }));
    }
    if got != want {
        return Err(fail(format!(
            "is a {} namespace, not a {name} namespace",
            type_name(got)
        )));
    }
    Ok(())
}

fn clone_flag(typ: LinuxNamespaceType) -> (&'static str, libc::c_int) {
    match typ {
        LinuxNamespaceType::Mount => ("mount", libc::CLONE_NEWNS),
        LinuxNamespaceType::Cgroup => ("cgroup", libc::CLONE_NEWCGROUP),
        LinuxNamespaceType::Uts => ("uts", libc::CLONE_NEWUTS),
        LinuxNamespaceType::Ipc => ("ipc", libc::CLONE_NEWIPC),
        LinuxNamespaceType::User => ("user", libc::CLONE_NEWUSER),
        LinuxNamespaceType::Pid => ("pid", libc::CLONE_NEWPID),
        LinuxNamespaceType::Network => ("network", libc::CLONE_NEWNET),
        LinuxNamespaceType::Time => ("time", 0x80), // CLONE_NEWTIME
    }
}

fn type_name(flag: libc::c_int) -> &'static str {
    [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Time,
    ]
    .into_iter()
    .map(clone_flag)
    .find(|&(_, f)| f == flag)
    .map_or("unknown", |(n, _)| n)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    use super::*;

    fn spec(ns: &[(LinuxNamespaceType, Option<&str>)], sysctl: &[&str]) -> Spec {
        let namespaces = ns
            .iter()
            .map(|(t, p)| {
                let b = LinuxNamespaceBuilder::default().typ(*t);
                match p {
                    Some(p) => b.path(*p).build().unwrap(),
                    None => b.build().unwrap(),
                }
            })
            .collect::<Vec<_>>();
        let sysctl: HashMap<String, String> =
            sysctl.iter().map(|k| (k.to_string(), "1".into())).collect();
        SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .namespaces(namespaces)
                    .sysctl(sysctl)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn matching_namespace_paths_pass() {
        use LinuxNamespaceType::*;
        let s = spec(
            &[
                (Network, Some("/proc/self/ns/net")),
                (Ipc, Some("/proc/self/ns/ipc")),
                (Uts, Some("/proc/self/ns/uts")),
                (Mount, Some("/proc/self/ns/mnt")),
                (Pid, None),
            ],
            &["net.ipv4.ip_forward"],
        );
        check(&s).unwrap();
    }

    #[test]
    fn a_path_of_another_type_is_refused_naming_both() {
        use LinuxNamespaceType::*;
        for (typ, file, want, got) in [
            (Cgroup, "ipc", "cgroup", "ipc"),
            (Ipc, "mnt", "ipc", "mount"),
            (Mount, "net", "mount", "network"),
            (Network, "pid", "network", "pid"),
            (Pid, "user", "pid", "user"),
            (User, "uts", "user", "uts"),
            (Uts, "cgroup", "uts", "cgroup"),
        ] {
            let path = format!("/proc/self/ns/{file}");
            let e = check(&spec(&[(typ, Some(&path))], &[]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&path) && e.contains(&format!("is a {got} namespace, not a {want}")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_path_that_is_no_namespace_or_missing_is_refused() {
        let e = check(&spec(
            &[(LinuxNamespaceType::Ipc, Some("/proc/self/status"))],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("/proc/self/status: not a namespace file"), "{e}");
        let e = check(&spec(
            &[(LinuxNamespaceType::Ipc, Some("/nonexistent/ns"))],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ns"), "{e}");
    }

    #[test]
    fn net_sysctls_need_a_network_namespace() {
        let e = check(&spec(
            &[(LinuxNamespaceType::Pid, None)],
            &["net.ipv4.ip_forward"],
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"net.ipv4.ip_forward\" not allowed in host network namespace"),
            "{e}"
        );
        check(&spec(
            &[(LinuxNamespaceType::Pid, None)],
            &["kernel.shmmax"],
        ))
        .unwrap();
        check(&spec(
            &[(LinuxNamespaceType::Network, None)],
            &["net/ipv4/ip_forward"],
        ))
        .unwrap();
    }
}
