//! `runv-vmm --check-kvm` on the machine running the tests says what that machine's KVM
//! is, read here independently from /sys/module and /dev/kvm.

use std::path::Path;
use std::process::Command;

#[test]
fn check_kvm_matches_this_machine() {
    let out = Command::new(env!("CARGO_BIN_EXE_runv-vmm"))
        .arg("--check-kvm")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let loaded = |m: &str| Path::new("/sys/module").join(m).exists();
    let hardware: Vec<_> = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .filter(|m| loaded(m))
        .collect();
    if loaded("kvm_pvm") && hardware.is_empty() {
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains("provided by kvm_pvm"), "{stderr}");
    } else if !Path::new("/dev/kvm").exists() {
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains("/dev/kvm does not exist"), "{stderr}");
    } else if out.status.success() {
        assert!(stdout.starts_with("/dev/kvm: KVM API 12"), "{stdout}");
        for m in hardware {
            assert!(stdout.contains(m), "{stdout} lacks {m}");
        }
    } else {
        // A device that is there but refuses (no permission, no VM): named, with why.
        assert!(stderr.contains("/dev/kvm"), "{stderr}");
    }
}
