//! Bundle preparation from images the tests build.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde_json::json;

use crate::bundle::{prepare_bundle, BindMount, BundleError, Overrides};
use crate::import::{import_path, ImportOptions};
use crate::store::Store;
use crate::testutil::TestImage;
use crate::unpack::UnpackOptions;

fn setup(config_extra: serde_json::Value) -> (tempfile::TempDir, Store, crate::Image) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("state"))
        .unwrap()
        .with_unpack_options(UnpackOptions { privileged: false });
    let layout = t.path().join("layout");
    TestImage::new(config_extra).write_layout(&layout, None, false);
    let opts = ImportOptions {
        name: Some("localhost/app:1".into()),
        ..ImportOptions::default()
    };
    let opts = ImportOptions {
        arch: "amd64".into(),
        ..opts
    };
    import_path(&s, &layout, &opts).unwrap();
    let img = s.image("localhost/app:1").unwrap();
    (t, s, img)
}

fn env_of(spec: &Spec) -> Vec<String> {
    spec.process().as_ref().unwrap().env().clone().unwrap()
}

#[test]
fn bundle_from_image_config() {
    let (t, s, img) = setup(json!({
        "Entrypoint": ["/bin/busybox"],
        "Cmd": ["echo", "hi"],
        "Env": ["PATH=/bin:/usr/bin", "GREETING=hello"],
        "WorkingDir": "/srv/app",
        "User": "app",
    }));
    let dest = t.path().join("bundle");
    let spec = prepare_bundle(&s, &img, &dest, &Overrides::default()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(s.root().join("layers"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let on_disk = Spec::load(dest.join("config.json")).unwrap();
    assert_eq!(on_disk, spec);
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/busybox", "echo", "hi"]);
    assert_eq!(
        env_of(&spec),
        ["PATH=/bin:/usr/bin", "GREETING=hello", "HOME=/home/app"]
    );
    assert_eq!(p.cwd(), Path::new("/srv/app"));
    assert!(
        dest.join("rootfs/srv/app").is_dir(),
        "missing WorkingDir is created"
    );
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
    assert_eq!(p.user().additional_gids().as_ref().unwrap(), &[10, 29]);
    assert_eq!(p.terminal(), Some(false));
    // runc-spec-like defaults.
    let root = spec.root().as_ref().unwrap();
    assert_eq!(
        (root.path().as_path(), root.readonly()),
        (Path::new("rootfs"), Some(false))
    );
    let ns: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    for want in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ] {
        assert!(ns.contains(&want), "{want:?} in {ns:?}");
    }
    let dests: Vec<PathBuf> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    for want in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ] {
        assert!(dests.contains(&PathBuf::from(want)), "{want} in {dests:?}");
    }
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/sys".to_string()));
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 3);
    assert!(caps.inheritable().is_none());
    // The rootfs is the layers applied in order.
    assert_eq!(std::fs::read(dest.join("rootfs/hello")).unwrap(), b"hi");
    assert!(!dest.join("rootfs/etc/old").exists());
}

#[test]
fn overrides_apply_like_docker_run() {
    let (t, s, img) = setup(json!({"Entrypoint": ["/bin/ep"], "User": "app", "WorkingDir": "/"}));
    let host = t.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    let ov = Overrides {
        args: vec!["run".into(), "--fast".into()],
        env: vec!["GREETING=bye".into(), "NEW=1".into()],
        cwd: Some("/work".into()),
        user: Some("1000:wheel".into()),
        terminal: true,
        mounts: vec![
            format!("{}:/data:ro", host.display()).parse().unwrap(),
            format!("{}:/rw", host.display()).parse().unwrap(),
        ],
        hostname: Some("box1".into()),
        entrypoint: None,
    };
    let dest = t.path().join("bundle");
    let spec = prepare_bundle(&s, &img, &dest, &ov).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/ep", "run", "--fast"]);
    assert_eq!(
        env_of(&spec),
        [
            "PATH=/bin",
            "GREETING=bye",
            "HOME=/home/app",
            "TERM=xterm",
            "NEW=1"
        ]
    );
    assert_eq!(p.cwd(), Path::new("/work"));
    assert!(dest.join("rootfs/work").is_dir());
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 10));
    assert_eq!(p.terminal(), Some(true));
    assert_eq!(spec.hostname().as_deref(), Some("box1"));
    let mounts = spec.mounts().as_ref().unwrap();
    let data = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/data"))
        .unwrap();
    assert_eq!(data.source().as_deref(), Some(host.as_path()));
    assert_eq!(data.typ().as_deref(), Some("bind"));
    assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
    let rw = mounts
        .iter()
        .find(|m| m.destination() == Path::new("/rw"))
        .unwrap();
    assert!(rw.options().as_ref().unwrap().contains(&"rw".to_string()));

    // --entrypoint replaces the entrypoint and drops the image's Cmd.
    let ov = Overrides {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: vec!["id".into()],
        ..Overrides::default()
    };
    let spec = prepare_bundle(&s, &img, &t.path().join("b2"), &ov).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/sh", "-c", "id"]
    );
}

#[test]
fn bind_mount_parsing() {
    let m: BindMount = "/h:/c:ro".parse().unwrap();
    assert_eq!(
        m,
        BindMount {
            host: "/h".into(),
            container: "/c".into(),
            readonly: true
        }
    );
    assert!(!"/h:/c".parse::<BindMount>().unwrap().readonly);
    for bad in [
        "h:/c",
        "/h:c",
        "/h",
        "/h:/c:rx",
        "/h:/",
        "/h:/a/../b",
        "/h:/c:ro:x",
    ] {
        let err = bad.parse::<BindMount>().unwrap_err();
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let (t, s, img) = setup(json!({"Cmd": ["sh"]}));
    let dest = t.path().join("bundle");
    let cases: Vec<(Overrides, &str)> = vec![
        (
            Overrides {
                env: vec!["NOVALUE".into()],
                ..Overrides::default()
            },
            "NOVALUE",
        ),
        (
            Overrides {
                env: vec!["=x".into()],
                ..Overrides::default()
            },
            "=x",
        ),
        (
            Overrides {
                cwd: Some("rel".into()),
                ..Overrides::default()
            },
            "rel",
        ),
        (
            Overrides {
                hostname: Some("bad host".into()),
                ..Overrides::default()
            },
            "bad host",
        ),
        (
            Overrides {
                mounts: vec!["/does/not/exist:/x".parse().unwrap()],
                ..Overrides::default()
            },
            "/does/not/exist",
        ),
        (
            Overrides {
                user: Some("ghost".into()),
                ..Overrides::default()
            },
            "ghost",
        ),
        (
            Overrides {
                user: Some("app:ghosts".into()),
                ..Overrides::default()
            },
            "ghosts",
        ),
    ];
    for (ov, needle) in cases {
        let err = prepare_bundle(&s, &img, &dest, &ov).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert!(!dest.exists(), "{needle}: bundle directory removed");
    }
    // An existing empty directory is kept, but emptied again.
    std::fs::create_dir(&dest).unwrap();
    let ov = Overrides {
        user: Some("ghost".into()),
        ..Overrides::default()
    };
    assert!(matches!(
        prepare_bundle(&s, &img, &dest, &ov).unwrap_err(),
        BundleError::User { .. }
    ));
    assert!(dest.is_dir() && std::fs::read_dir(&dest).unwrap().next().is_none());
    // A non-empty one is refused untouched.
    std::fs::write(dest.join("keep"), b"k").unwrap();
    let err = prepare_bundle(&s, &img, &dest, &Overrides::default()).unwrap_err();
    assert!(matches!(err, BundleError::DestNotEmpty(_)), "{err}");
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);
}

#[test]
fn image_without_command_needs_one() {
    let (t, s, img) = setup(json!({"Cmd": null}));
    let dest = t.path().join("bundle");
    let err = prepare_bundle(&s, &img, &dest, &Overrides::default()).unwrap_err();
    assert!(matches!(err, BundleError::NoCommand(_)), "{err}");
    assert!(err.to_string().contains("localhost/app:1"));
    assert!(!dest.exists());
    let ov = Overrides {
        args: vec!["/bin/true".into()],
        ..Overrides::default()
    };
    let spec = prepare_bundle(&s, &img, &dest, &ov).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/true"]
    );
    // Image Env "PATH=/bin" and HOME of root from the image's passwd.
    assert_eq!(env_of(&spec), ["PATH=/bin", "GREETING=hello", "HOME=/root"]);
}
