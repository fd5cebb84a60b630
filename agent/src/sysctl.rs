//! Network sysctls. The guest spec has no network namespace: the container uses the
//! VM's, which is the sandbox's own (runv placed the VM in the spec's network namespace
//! on the host, and refused `net.*` sysctls for a container in the host's). libcontainer
//! would refuse them as "not allowed in host network namespace", so the agent writes
//! them itself, in the guest, before the container is built, and hands libcontainer
//! the rest.

use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use runv_agent_protocol::{ErrorCode, ErrorResponse};

/// Takes the `net.*` sysctls out of `spec` and writes them under `proc_sys`
/// (`/proc/sys`). Nothing is taken when the spec has a network namespace of its own
/// (libcontainer applies them there). A bad key or an unwritable value fails with the
/// key named; sysctls already written stay (the VM is torn down on a failed create).
pub fn apply_net(spec: &mut Spec, proc_sys: &Path) -> Result<(), ErrorResponse> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(());
    };
    let has_netns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Network);
    let Some(mut sysctl) = linux.sysctl().clone() else {
        return Ok(());
    };
    if has_netns {
        return Ok(());
    }
    let mut net: Vec<(String, String)> = sysctl
        .iter()
        .filter(|(k, _)| k.starts_with("net.") || k.starts_with("net/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    net.sort();
    for (key, value) in &net {
        let rel = relative_path(key).ok_or_else(|| {
            ErrorResponse::field(
                ErrorCode::InvalidArgument,
                "linux.sysctl",
                format!("sysctl {key:?}: not a sysctl name"),
            )
        })?;
        std::fs::write(proc_sys.join(&rel), value).map_err(|e| {
            ErrorResponse::field(
                ErrorCode::InvalidArgument,
                "linux.sysctl",
                format!("sysctl {key:?} = {value:?}: {e}"),
            )
        })?;
        sysctl.remove(key);
    }
    linux.set_sysctl(Some(sysctl));
    spec.set_linux(Some(linux));
    Ok(())
}

/// `net.ipv4.ip_forward` -> `net/ipv4/ip_forward`. Components are `[A-Za-z0-9_-]` only
/// (interface names with dots must be written with slashes, as sysctl(8) accepts);
/// nothing else can name a file outside /proc/sys/net.
fn relative_path(key: &str) -> Option<String> {
    let sep = if key.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = key.split(sep).collect();
    let ok = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (sep == '/' && b == b'.')
                })
                && *p != "."
                && *p != ".."
        });
    ok.then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    use super::*;

    /// A fresh directory standing in for /proc/sys.
    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn spec(netns: bool, sysctl: &[(&str, &str)]) -> Spec {
        let ns = if netns {
            vec![LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()
                .unwrap()]
        } else {
            vec![]
        };
        let sysctl: HashMap<String, String> = sysctl
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .namespaces(ns)
                    .sysctl(sysctl)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn sysctls(s: &Spec) -> HashMap<String, String> {
        s.linux().as_ref().unwrap().sysctl().clone().unwrap()
    }

    #[test]
    fn net_sysctls_are_written_and_taken_out() {
        let t = tempdir();
        std::fs::create_dir_all(t.path().join("net/ipv4/conf/eth0.1")).unwrap();
        let mut s = spec(
            false,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net/ipv4/conf/eth0.1/forwarding", "1"),
                ("kernel.shmmax", "9"),
            ],
        );
        apply_net(&mut s, t.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("net/ipv4/conf/eth0.1/forwarding")).unwrap(),
            "1"
        );
        assert_eq!(
            sysctls(&s),
            HashMap::from([("kernel.shmmax".into(), "9".into())])
        );
    }

    #[test]
    fn a_spec_with_its_own_network_namespace_is_left_to_libcontainer() {
        let t = tempdir();
        let mut s = spec(true, &[("net.ipv4.ip_forward", "1")]);
        apply_net(&mut s, t.path()).unwrap();
        assert_eq!(sysctls(&s).len(), 1);
        assert!(!t.path().join("net").exists());
    }

    #[test]
    fn names_that_could_leave_proc_sys_net_are_refused() {
        let t = tempdir();
        for key in [
            "net...x",
            "net/../kernel/x",
            "net.ipv4.ip forward",
            "net/a/../../b",
            "net.a/b",
        ] {
            let mut s = spec(false, &[(key, "1")]);
            let e = apply_net(&mut s, t.path()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("linux.sysctl"), "{key}");
            assert!(e.message.contains(key), "{key}: {}", e.message);
        }
    }

    #[test]
    fn an_unwritable_sysctl_names_the_key() {
        let t = tempdir();
        let mut s = spec(false, &[("net.core.nonexistent", "1")]);
        let e = apply_net(&mut s, t.path()).unwrap_err();
        assert!(e.message.contains("net.core.nonexistent"), "{}", e.message);
    }
}
