use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Spec};
use serde_json::json;

use super::linux::{dev_major, dev_minor};
use super::mounts::name_component;
use super::*;
use tempfile::TempDir;

/// Building a bundle's tree under a test directory.
trait Tree {
    /// Creates `rel` (and its parents) as a directory.
    fn dir(&self, rel: &str) -> PathBuf;
    /// Creates `rel` (and its parents) as a file holding `content`.
    fn file(&self, rel: &str, content: &str) -> PathBuf;
}

impl Tree for TempDir {
    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
}

/// A Docker-generated config.json (docker run -v ... --device ..., Docker 24).
const DOCKER_CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/docker-config.json"
));
/// A containerd CRI app-container config.json (joins the pod's namespaces).
const CRI_CONFIG: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/cri-config.json"
));

const DOCKER_ID: &str = "4f1c2d3e5a6b";
const DOCKER_ROOT: &str =
    "overlay2/9b1e0c8f7d6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c/merged";

fn target(dir: &str) -> ShareTarget {
    ShareTarget {
        tag: "runv".into(),
        container_dir: dir.into(),
    }
}

/// The Docker spec with `/var/lib/docker` moved under `tmp`, and its files made.
fn docker_setup(tmp: &TempDir) -> Spec {
    tmp.dir(DOCKER_ROOT);
    for f in ["resolv.conf", "hostname", "hosts"] {
        tmp.file(&format!("containers/{DOCKER_ID}/{f}"), "x\n");
    }
    tmp.dir("volumes/data/_data");
    let json = DOCKER_CONFIG.replace("/var/lib/docker", &tmp.path().to_string_lossy());
    serde_json::from_str(&json).unwrap()
}

/// A spec from JSON, for small cases.
fn spec(value: serde_json::Value) -> Spec {
    serde_json::from_value(value).unwrap()
}

fn guest(sub: &str) -> PathBuf {
    Path::new("/run/runv/shares/runv").join(sub)
}

#[test]
fn docker_bind_mounts_of_resolv_conf_hosts_hostname() {
    let tmp = tempfile::tempdir().unwrap();
    let original = docker_setup(&tmp);
    let out = rewrite_spec_for_guest(&original, &tmp.dir("bundle"), &target(DOCKER_ID)).unwrap();

    // root.path: absolute host path -> share location.
    let rootfs_sub = format!("{DOCKER_ID}/rootfs");
    assert_eq!(out.rootfs, ShareLocation::new("runv", &rootfs_sub).unwrap());
    let root = out.spec.root().as_ref().unwrap();
    assert_eq!(root.path(), &guest(&rootfs_sub));
    let e = &out.layout.entries[0];
    assert_eq!(e.host_path, tmp.path().join(DOCKER_ROOT));
    assert_eq!(
        (e.kind, &e.purpose),
        (EntryKind::Directory, &EntryPurpose::Rootfs)
    );

    // Each file bind gets its own subpath; the volume is a directory, read-only.
    let expect = [
        (7, "resolv.conf", "/etc/resolv.conf", EntryKind::File, false),
        (8, "hostname", "/etc/hostname", EntryKind::File, false),
        (9, "hosts", "/etc/hosts", EntryKind::File, false),
        (10, "_data", "/data", EntryKind::Directory, true),
    ];
    assert_eq!(out.layout.entries.len(), 1 + expect.len());
    let mounts = out.spec.mounts().as_ref().unwrap();
    let orig_mounts = original.mounts().as_ref().unwrap();
    for ((index, name, dest, kind, ro), entry) in expect.iter().zip(&out.layout.entries[1..]) {
        let sub = format!("{DOCKER_ID}/mounts/{index}/{name}");
        assert_eq!(entry.location, ShareLocation::new("runv", &sub).unwrap());
        assert_eq!(entry.kind, *kind, "{dest}");
        assert_eq!(entry.readonly, *ro, "{dest}");
        assert!(entry.recursive);
        assert_eq!(
            entry.purpose,
            EntryPurpose::BindMount {
                index: *index,
                destination: PathBuf::from(dest)
            }
        );
        assert_eq!(
            &entry.host_path,
            orig_mounts[*index].source().as_ref().unwrap()
        );
        let m = &mounts[*index];
        assert_eq!(m.source().as_ref().unwrap(), &guest(&sub));
        assert_eq!(m.destination(), &PathBuf::from(dest));
        assert_eq!(m.options(), orig_mounts[*index].options(), "options pass");
        assert_eq!(
            entry.location.host_path(Path::new("/share")).unwrap(),
            Path::new("/share").join(&sub)
        );
    }
    // proc, tmpfs, devpts, sysfs, cgroup, mqueue, shm: unchanged.
    assert_eq!(mounts[..7], orig_mounts[..7]);

    // Hooks stay on the host.
    assert!(out.spec.hooks().is_none());
    assert_eq!(&out.host.hooks, original.hooks());

    // No namespace paths; the network namespace is the VM's, the rest stay.
    let linux = out.spec.linux().as_ref().unwrap();
    let kept: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    use LinuxNamespaceType::*;
    assert_eq!(kept, vec![Mount, Uts, Pid, Ipc, Cgroup]);
    assert!(out.host.namespaces.is_empty());

    // cgroupsPath: host's stays on the host, the guest gets its own.
    assert_eq!(
        out.host.cgroups_path,
        Some(PathBuf::from("system.slice:docker:4f1c2d3e5a6b"))
    );
    assert_eq!(
        linux.cgroups_path(),
        &Some(PathBuf::from(format!("/runv/{DOCKER_ID}")))
    );

    // Devices with numbers, resources, seccomp, process: untouched (but the process's
    // AppArmor profile: lsm_fields_are_removed_and_reported).
    let orig_linux = original.linux().as_ref().unwrap();
    assert_eq!(linux.devices(), orig_linux.devices());
    assert_eq!(linux.resources(), orig_linux.resources());
    assert_eq!(linux.seccomp(), orig_linux.seccomp());
    let mut process = original.process().clone().unwrap();
    process.set_apparmor_profile(None);
    assert_eq!(out.spec.process().as_ref(), Some(&process));

    // No host path left anywhere in what goes to the guest.
    let wire = serde_json::to_string(&out.spec).unwrap();
    assert!(!wire.contains(&*tmp.path().to_string_lossy()), "{wire}");
    assert!(!wire.contains("libnetwork-setkey"));
}

#[test]
fn cri_namespace_paths_stay_on_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let json = CRI_CONFIG
        .replace("/var/lib/", &format!("{}/var/", tmp.path().display()))
        .replace("/run/containerd", &format!("{}/run", tmp.path().display()));
    let original: Spec = serde_json::from_str(&json).unwrap();
    for m in original.mounts().as_ref().unwrap() {
        if let Some(src) = m.source().as_ref().filter(|s| s.starts_with(tmp.path())) {
            if m.destination().ends_with("serviceaccount") || m.destination().ends_with("shm") {
                std::fs::create_dir_all(src).unwrap();
            } else {
                std::fs::create_dir_all(src.parent().unwrap()).unwrap();
                std::fs::write(src, "").unwrap();
            }
        }
    }
    let out = rewrite_spec_for_guest(&original, &bundle, &target("web")).unwrap();

    use LinuxNamespaceType::*;
    let linux = out.spec.linux().as_ref().unwrap();
    let kept: Vec<_> = linux.namespaces().as_ref().unwrap().clone();
    assert_eq!(
        kept.iter().map(|n| n.typ()).collect::<Vec<_>>(),
        vec![Pid, Mount, Cgroup]
    );
    assert!(kept.iter().all(|n| n.path().is_none()));
    let host: Vec<(LinuxNamespaceType, &str)> = out
        .host
        .namespaces
        .iter()
        .map(|n| (n.typ, n.path.to_str().unwrap()))
        .collect();
    assert_eq!(
        host,
        vec![
            (Ipc, "/proc/4242/ns/ipc"),
            (Uts, "/proc/4242/ns/uts"),
            (
                Network,
                "/var/run/netns/cni-0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
            ),
        ]
    );
    // Relative root.path resolved against the bundle.
    assert_eq!(out.layout.entries[0].host_path, bundle.join("rootfs"));
    // termination-log, hosts, hostname, resolv.conf: files; shm, token: dirs.
    let kinds: Vec<_> = out.layout.entries[1..].iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(kinds, vec![File, File, File, File, Directory, Directory]);
    assert!(out.layout.entries.last().unwrap().readonly);
    let wire = serde_json::to_string(&out.spec).unwrap();
    assert!(
        !wire.contains("/proc/4242") && !wire.contains("netns"),
        "{wire}"
    );
}

#[test]
fn namespace_rules_table() {
    use super::linux::keep_for_guest;
    use LinuxNamespaceType::*;
    for (typ, without_path, with_path) in [
        (Network, false, false),
        (Ipc, true, false),
        (Uts, true, false),
        (Pid, true, true),
        (Mount, true, true),
        (User, true, true),
        (Cgroup, true, true),
        (Time, true, true),
    ] {
        assert_eq!(keep_for_guest(typ, false), without_path, "{typ:?}");
        assert_eq!(keep_for_guest(typ, true), with_path, "{typ:?} with path");
    }
}

#[test]
fn absolute_and_relative_root_path() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    let abs = tmp.dir("elsewhere/rootfs");
    tmp.dir("bundle/rfs");
    for (path, host) in [
        (abs.to_string_lossy().into_owned(), abs.clone()),
        ("rfs".to_owned(), bundle.join("rfs")),
        ("./rfs".to_owned(), bundle.join("./rfs")),
    ] {
        let s = spec(json!({"ociVersion": "1.1.0", "root": {"path": path, "readonly": true}}));
        let out = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap();
        let entry = &out.layout.entries[0];
        assert_eq!(entry.host_path, host, "{path}");
        assert!(entry.host_path.is_absolute());
        assert!(entry.readonly);
        let root = out.spec.root().as_ref().unwrap();
        assert_eq!(root.path(), &guest("c1/rootfs"));
        assert_eq!(root.readonly(), Some(true));
    }
}

#[test]
fn relative_bind_source_resolves_against_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    tmp.file("bundle/conf/app.toml", "");
    let s = spec(json!({
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/etc/app.toml", "type": "none", "source": "conf/app.toml", "options": ["bind", "ro"]}]
    }));
    let out = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap();
    let e = &out.layout.entries[1];
    assert_eq!(e.host_path, bundle.join("conf/app.toml"));
    assert_eq!(
        (e.kind, e.readonly, e.recursive),
        (EntryKind::File, true, false)
    );
    assert_eq!(e.location.subpath, "c1/mounts/0/app.toml");
}

#[test]
fn missing_bind_source_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let s = spec(json!({
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/nonexistent/runv-test/data", "options": ["rbind"]}
        ]
    }));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(
        matches!(err, RewriteError::BindSourceMissing { index: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/runv-test/data"), "{msg}");
    assert!(msg.contains("mounts[1]") && msg.contains("/data"), "{msg}");

    let s = spec(json!({
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/data", "type": "bind"}]
    }));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(matches!(
        err,
        RewriteError::BindWithoutSource { index: 0, .. }
    ));
}

#[test]
fn device_that_is_a_regular_file_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let fake = tmp.file("fakedev", "");
    let s = spec(json!({
        "root": {"path": "rootfs"},
        "linux": {"devices": [{"path": fake, "type": "c"}]}
    }));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    match &err {
        RewriteError::NotADevice { index, path, kind } => {
            assert_eq!((*index, path, *kind), (0, &fake, "regular file"));
        }
        other => panic!("expected NotADevice, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("linux.devices[0]") && msg.contains(&*fake.to_string_lossy()),
        "{msg}"
    );
}

#[test]
fn devices_go_by_major_minor() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let with = |devices: serde_json::Value| {
        spec(json!({"root": {"path": "rootfs"}, "linux": {"devices": devices}}))
    };
    // Numbered entries pass as they are (the path is the container path).
    let s = with(
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438},
                         {"path": "/dev/my-fifo", "type": "p"}]),
    );
    let out = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap();
    assert_eq!(
        out.spec.linux().as_ref().unwrap().devices(),
        s.linux().as_ref().unwrap().devices()
    );

    // No numbers: looked up on the host (/dev/null is char 1:3 everywhere).
    let s = with(json!([{"path": "/dev/null", "type": "c"}]));
    let out = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap();
    let dev = &out
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (dev.typ(), dev.major(), dev.minor()),
        (LinuxDeviceType::C, 1, 3)
    );

    let s = with(json!([{"path": "/dev/null", "type": "b"}]));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(
        matches!(err, RewriteError::DeviceTypeMismatch { found: "char", .. }),
        "{err:?}"
    );

    let s = with(json!([{"path": "/dev/x", "type": "a", "major": 1, "minor": 1}]));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(
        matches!(err, RewriteError::InvalidDeviceType { .. }),
        "{err:?}"
    );

    let s = with(json!([{"path": "/nonexistent/runv-dev", "type": "c"}]));
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/runv-dev"), "{err}");
}

#[test]
fn dev_t_split_matches_glibc() {
    // makedev(8, 17) and makedev(259, 1048575) as glibc encodes them.
    let makedev = |ma: u64, mi: u64| {
        ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
    };
    for (ma, mi) in [(8, 17), (259, 1_048_575), (4095, 255), (1, 3)] {
        let d = makedev(ma, mi);
        assert_eq!((dev_major(d), dev_minor(d)), (ma as i64, mi as i64));
    }
}

#[test]
fn all_hooks_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let hook = json!([{"path": "/usr/bin/hook", "args": ["hook", "x"], "timeout": 5}]);
    let s = spec(json!({
        "root": {"path": "rootfs"},
        "hooks": {"prestart": hook, "createRuntime": hook, "createContainer": hook,
                  "startContainer": hook, "poststart": hook, "poststop": hook}
    }));
    let out = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap();
    assert!(out.spec.hooks().is_none());
    assert_eq!(&out.host.hooks, s.hooks());
    let wire = serde_json::to_value(&out.spec).unwrap();
    assert!(wire.get("hooks").is_none());
}

#[test]
fn unreachable_mounts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let one = |m: serde_json::Value| spec(json!({"root": {"path": "rootfs"}, "mounts": [m]}));

    let err = rewrite_spec_for_guest(
        &one(json!({"destination": "/data", "type": "ext4", "source": "/dev/sdb1"})),
        &bundle,
        &target("c1"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"ext4\""), "{err}");

    let err = rewrite_spec_for_guest(
        &one(json!({"destination": "/x", "source": "/x"})),
        &bundle,
        &target("c1"),
    )
    .unwrap_err();
    assert!(matches!(err, RewriteError::MountTypeMissing { .. }));

    let sock = tmp.path().join("docker.sock");
    let _listener = UnixListener::bind(&sock).unwrap();
    let err = rewrite_spec_for_guest(
        &one(json!({"destination": "/var/run/docker.sock", "type": "bind", "source": sock})),
        &bundle,
        &target("c1"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RewriteError::UnsupportedBindSource { kind: "socket", .. }
        ),
        "{err:?}"
    );
}

#[test]
fn root_problems_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.file("bundle/afile", "");
    let err = rewrite_spec_for_guest(&spec(json!({})), &bundle, &target("c1")).unwrap_err();
    assert!(matches!(err, RewriteError::MissingRoot));
    let err = rewrite_spec_for_guest(
        &spec(json!({"root": {"path": "afile"}})),
        &bundle,
        &target("c1"),
    )
    .unwrap_err();
    assert!(matches!(err, RewriteError::RootfsNotDirectory { .. }));
    let err = rewrite_spec_for_guest(
        &spec(json!({"root": {"path": "nope"}})),
        &bundle,
        &target("c1"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&*bundle.join("nope").to_string_lossy()),
        "{err}"
    );
}

#[test]
fn bad_targets_and_net_devices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.dir("bundle");
    tmp.dir("bundle/rootfs");
    let s = spec(json!({"root": {"path": "rootfs"}}));
    for dir in ["", "..", "a/b"] {
        assert!(matches!(
            rewrite_spec_for_guest(&s, &bundle, &target(dir)),
            Err(RewriteError::ContainerDir { .. })
        ));
    }
    let bad_tag = ShareTarget {
        tag: "no spaces".into(),
        container_dir: "c1".into(),
    };
    assert!(matches!(
        rewrite_spec_for_guest(&s, &bundle, &bad_tag),
        Err(RewriteError::Share(_))
    ));
    let s = spec(
        json!({"root": {"path": "rootfs"}, "linux": {"netDevices": {"eth1": {"name": "eth0"}}}}),
    );
    let err = rewrite_spec_for_guest(&s, &bundle, &target("c1")).unwrap_err();
    assert!(err.to_string().contains("eth1"), "{err}");
}

#[test]
fn share_names_are_sanitized() {
    assert_eq!(name_component(Path::new("/a/resolv.conf")), "/resolv.conf");
    assert_eq!(name_component(Path::new("/a/kube api~x")), "/kube_api_x");
    assert_eq!(name_component(Path::new("/")), "");
    assert_eq!(name_component(Path::new(&"x".repeat(100))).len(), 49);
}

#[test]
fn docker_apparmor_profile_is_dropped_and_the_create_checks_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let original = docker_setup(&tmp);
    assert_eq!(
        original
            .process()
            .as_ref()
            .unwrap()
            .apparmor_profile()
            .as_deref(),
        Some("docker-default")
    );
    // What create checks before the rewrite, then the rewrite: neither fails.
    crate::speccheck::check(&original).unwrap();
    let out = rewrite_spec_for_guest(&original, &tmp.dir("bundle"), &target(DOCKER_ID)).unwrap();
    assert_eq!(
        out.ignored,
        vec![lsm::IgnoredField {
            field: "process.apparmorProfile",
            value: "docker-default".into()
        }]
    );
    let wire = serde_json::to_string(&out.spec).unwrap();
    assert!(!wire.contains("apparmorProfile"), "{wire}");
    assert!(!wire.contains("docker-default"), "{wire}");
}

#[test]
fn lsm_fields_are_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    tmp.dir("rootfs");
    let s = spec(json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {
            "cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0},
            "apparmorProfile": "docker-default",
            "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2"
        },
        "linux": {"mountLabel": "system_u:object_r:container_file_t:s0:c1,c2"}
    }));
    let out = rewrite_spec_for_guest(&s, tmp.path(), &target("c1")).unwrap();
    let fields: Vec<&str> = out.ignored.iter().map(|f| f.field).collect();
    assert_eq!(
        fields,
        [
            "process.apparmorProfile",
            "process.selinuxLabel",
            "linux.mountLabel"
        ]
    );
    assert_eq!(
        out.ignored[2].to_string(),
        r#"linux.mountLabel "system_u:object_r:container_file_t:s0:c1,c2""#
    );
    let wire = serde_json::to_value(&out.spec).unwrap();
    assert!(wire["process"].get("apparmorProfile").is_none(), "{wire}");
    assert!(wire["process"].get("selinuxLabel").is_none(), "{wire}");
    assert!(wire["linux"].get("mountLabel").is_none(), "{wire}");
    // Nothing to report without them.
    let plain = spec(json!({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}}
    }));
    let out = rewrite_spec_for_guest(&plain, tmp.path(), &target("c1")).unwrap();
    assert!(out.ignored.is_empty());
}
