use std::os::unix::fs::{symlink, PermissionsExt};

use oci_spec::runtime::{ProcessBuilder, SpecBuilder, UserBuilder};
use tempfile::TempDir;

use super::*;

fn rootfs() -> TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("home/user")).unwrap();
    std::fs::write(root.join("bin/busybox"), b"").unwrap();
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("bin/data"), b"").unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    symlink("/bin", root.join("usr-bin")).unwrap();
    symlink("/home/user", root.join("h")).unwrap();
    d
}

fn process(args: &[&str], cwd: &str, uid: u32) -> Process {
    ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .cwd(cwd)
        .env(vec!["PATH=/bin".to_string()])
        .user(UserBuilder::default().uid(uid).gid(0u32).build().unwrap())
        .build()
        .unwrap()
}

fn field_of(r: Result<(), ErrorResponse>) -> String {
    let e = r.expect_err("should be refused");
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    e.field.expect("names a field")
}

#[test]
fn a_good_process_passes() {
    let d = rootfs();
    check_process(&process(&["sh", "-c", "true"], "/", 0), d.path(), &[]).unwrap();
    check_process(
        &process(&["/bin/busybox"], "/home/user", 1000),
        d.path(),
        &[],
    )
    .unwrap();
    check_process(&process(&["/usr-bin/sh"], "/h", 0), d.path(), &[]).unwrap();
}

#[test]
fn empty_args_are_refused() {
    let d = rootfs();
    assert_eq!(
        field_of(check_process(&process(&[], "/", 0), d.path(), &[])),
        "process.args"
    );
}

#[test]
fn a_missing_or_non_executable_binary_is_refused_naming_it() {
    let d = rootfs();
    let e = check_process(&process(&["nosuch"], "/", 0), d.path(), &[]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("process.args"));
    assert!(e.message.contains("\"nosuch\""), "{}", e.message);
    assert_eq!(
        field_of(check_process(
            &process(&["/bin/data"], "/", 0),
            d.path(),
            &[]
        )),
        "process.args"
    );
}

#[test]
fn a_missing_cwd_is_refused_naming_it() {
    let d = rootfs();
    let e = check_process(&process(&["sh"], "/nonexistent", 0), d.path(), &[]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("process.cwd"));
    assert!(e.message.contains("/nonexistent"), "{}", e.message);
    assert_eq!(
        field_of(check_process(
            &process(&["sh"], "/bin/busybox", 0),
            d.path(),
            &[]
        )),
        "process.cwd"
    );
}

#[test]
fn a_cwd_or_binary_under_a_mount_is_accepted() {
    let d = rootfs();
    let mounts = [PathBuf::from("/data")];
    check_process(&process(&["/data/run"], "/data/x", 0), d.path(), &mounts).unwrap();
}

#[test]
fn the_invalid_uid_is_refused() {
    let d = rootfs();
    let e = check_process(&process(&["sh"], "/", u32::MAX), d.path(), &[]).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("process.user.uid"));
    assert!(e.message.contains("4294967295"));
}

#[test]
fn a_spec_without_process_or_rootfs_is_refused() {
    let d = rootfs();
    let spec = SpecBuilder::default().build().unwrap();
    let mut no_process = spec.clone();
    no_process.set_process(None);
    assert_eq!(field_of(check_spec(&no_process, d.path())), "process");
    assert_eq!(
        field_of(check_spec(&spec, &d.path().join("missing"))),
        "root.path"
    );
}

#[test]
fn resolution_stays_inside_the_root() {
    let d = rootfs();
    std::fs::create_dir(d.path().join("etc")).unwrap();
    symlink("../../../../etc", d.path().join("escape")).unwrap();
    let p = resolve_in_root(d.path(), Path::new("/escape")).unwrap();
    assert_eq!(p, d.path().join("etc"));
    symlink("loop", d.path().join("loop")).unwrap();
    assert_eq!(resolve_in_root(d.path(), Path::new("/loop")), None);
}
