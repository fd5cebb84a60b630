//! Checks that the host's KVM can run a stock Linux guest before anything is started, so a
//! host that cannot gets a clear error instead of a guest that crawls and hangs.

use std::path::Path;

/// Where loaded kernel modules appear.
pub const SYS_MODULE: &str = "/sys/module";

/// Why the host cannot run the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm is backed by kvm_pvm only.
    #[error("/dev/kvm on this host is provided by kvm_pvm ({0}/kvm_pvm), not by hardware virtualization (kvm_intel or kvm_amd): kvm_pvm cannot run a stock Linux guest (it fails on cmpxchg16b, xrstor and int3). Run runv on a host with VMX or SVM, or through tests/kvmbox on this one")]
    PvmOnly(String),
}

/// Fails when the only KVM backend loaded under `sys_module` is kvm_pvm.
pub fn check_kvm_backend(sys_module: &Path) -> Result<(), Error> {
    let loaded = |m: &str| sys_module.join(m).exists();
    if loaded("kvm_pvm") && !loaded("kvm_intel") && !loaded("kvm_amd") {
        return Err(Error::PvmOnly(sys_module.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(modules: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "runv-host-{}-{}",
            std::process::id(),
            modules.join("-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for m in modules {
            std::fs::create_dir_all(dir.join(m)).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pvm_alone_is_refused_with_the_cause() {
        let dir = fake_sysfs(&["kvm", "kvm_pvm"]);
        let e = check_kvm_backend(&dir).unwrap_err();
        assert!(e.to_string().contains("kvm_pvm"));
        assert!(e.to_string().contains("tests/kvmbox"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hardware_backends_pass() {
        for set in [
            &["kvm", "kvm_amd"][..],
            &["kvm", "kvm_intel", "kvm_pvm"],
            &["kvm"],
        ] {
            let dir = fake_sysfs(set);
            assert!(check_kvm_backend(&dir).is_ok(), "{set:?}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
