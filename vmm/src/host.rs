//! Checks that the host's KVM can run a stock Linux guest before anything is started, so a
//! host that cannot gets a clear error instead of a guest that crawls and hangs.

use std::path::Path;

/// Where loaded kernel modules appear.
pub const SYS_MODULE: &str = "/sys/module";

/// The KVM device.
pub const DEV_KVM: &str = "/dev/kvm";

/// Why the host cannot run the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No /dev/kvm.
    #[error(
        "{0} does not exist: load kvm_intel or kvm_amd (and enable VT-x or AMD-V in the firmware)"
    )]
    NoDevice(String),
    /// /dev/kvm cannot be used.
    #[error("{what} {path}: {source}")]
    Kvm {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// /dev/kvm is backed by kvm_pvm only.
    #[error("/dev/kvm on this host is provided by kvm_pvm ({0}/kvm_pvm), not by hardware virtualization (kvm_intel or kvm_amd): kvm_pvm cannot run a stock Linux guest (it fails on cmpxchg16b, xrstor and int3). Run runv on a host with VMX or SVM, or through tests/kvmbox on this one")]
    PvmOnly(String),
}

/// Fails when the only KVM backend loaded under `sys_module` is kvm_pvm.
pub fn check_kvm_backend(sys_module: &Path) -> Result<(), Error> {
    refuse_pvm_only(sys_module, &kvm_backends(sys_module))
}

/// Fails when `backends` (found under `sys_module`) is kvm_pvm alone.
fn refuse_pvm_only(sys_module: &Path, backends: &[&str]) -> Result<(), Error> {
    if backends == ["kvm_pvm"] {
        return Err(Error::PvmOnly(sys_module.display().to_string()));
    }
    Ok(())
}

/// The KVM backend modules loaded under `sys_module`, by name.
pub fn kvm_backends(sys_module: &Path) -> Vec<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .filter(|m| sys_module.join(m).exists())
        .collect()
}

/// Whether this host can run a VM, without running one: the backend is not kvm_pvm
/// alone, and `dev_kvm` opens, speaks the stable API and makes a VM. Returns what was
/// found ("KVM API 12, kvm_amd").
pub fn check_kvm(sys_module: &Path, dev_kvm: &Path) -> Result<String, Error> {
    let backends = kvm_backends(sys_module);
    refuse_pvm_only(sys_module, &backends)?;
    let path = dev_kvm.display().to_string();
    if !dev_kvm.exists() {
        return Err(Error::NoDevice(path));
    }
    let err = |what| {
        let path = path.clone();
        move |e: kvm_ioctls::Error| Error::Kvm {
            what,
            path,
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    };
    let cpath =
        std::ffi::CString::new(dev_kvm.as_os_str().as_encoded_bytes()).map_err(|e| Error::Kvm {
            what: "opening",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
    let kvm = kvm_ioctls::Kvm::new_with_path(&cpath).map_err(err("opening"))?;
    let api = kvm.get_api_version();
    if api != 12 {
        return Err(Error::Kvm {
            what: "KVM API version (runv needs 12)",
            path,
            source: std::io::Error::other(format!("{api}")),
        });
    }
    kvm.create_vm().map_err(err("creating a VM through"))?;
    Ok(format!(
        "KVM API {api}, {}",
        if backends.is_empty() {
            "backend module unknown".to_string()
        } else {
            backends.join(", ")
        }
    ))
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
    fn a_missing_or_unusable_device_is_named() {
        // (Sets of their own: each test's fake sysfs is named by its modules.)
        let dir = fake_sysfs(&["kvm_amd"]);
        let e = check_kvm(&dir, &dir.join("no-kvm"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-kvm does not exist"), "{e}");
        // A regular file is no KVM device: its ioctls fail, naming the path.
        std::fs::write(dir.join("not-kvm"), b"").unwrap();
        let e = check_kvm(&dir, &dir.join("not-kvm"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not-kvm"), "{e}");
        let dir2 = fake_sysfs(&["kvm_pvm"]);
        let e = check_kvm(&dir2, &dir.join("not-kvm"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kvm_pvm"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
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
