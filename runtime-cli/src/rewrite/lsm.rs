//! LSM fields: `process.apparmorProfile`, `process.selinuxLabel`, `linux.mountLabel`.
//!
//! An engine sets them from the *host's* LSM (Docker gives `docker-default` on a host
//! with AppArmor), but the container runs in the guest, whose kernel has none, and
//! libcontainer fails on them there (a profile without AppArmor is refused; a mount
//! label becomes a `context=` mount option the kernel rejects). runc, whose container
//! runs on the host, refuses them when the host lacks the LSM; runv accepts them and
//! does not apply them: they are removed from the guest's spec and reported, and never
//! applied on the host either (runv-vmm and the shims are runv's processes, not the
//! container's). docs/security.md, "LSM fields".

use oci_spec::runtime::{Process, Spec};

/// One LSM field removed from the spec: its JSON path and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredField {
    pub field: &'static str,
    pub value: String,
}

impl std::fmt::Display for IgnoredField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.field, self.value)
    }
}

/// Removes the process's LSM fields (also what an exec'd process carries).
pub fn strip_process(process: &mut Process) -> Vec<IgnoredField> {
    let mut ignored = Vec::new();
    if let Some(value) = process.apparmor_profile().clone() {
        process.set_apparmor_profile(None);
        ignored.push(IgnoredField {
            field: "process.apparmorProfile",
            value,
        });
    }
    if let Some(value) = process.selinux_label().clone() {
        process.set_selinux_label(None);
        ignored.push(IgnoredField {
            field: "process.selinuxLabel",
            value,
        });
    }
    ignored
}

/// Removes every LSM field of the spec.
pub(super) fn strip(spec: &mut Spec) -> Vec<IgnoredField> {
    let mut ignored = spec
        .process_mut()
        .as_mut()
        .map(strip_process)
        .unwrap_or_default();
    if let Some(linux) = spec.linux_mut().as_mut() {
        if let Some(value) = linux.mount_label().clone() {
            linux.set_mount_label(None);
            ignored.push(IgnoredField {
                field: "linux.mountLabel",
                value,
            });
        }
    }
    ignored
}
