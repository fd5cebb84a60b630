//! share.rs tests; the `root_` ones bind-mount (as root) and check what an
//! unprivileged user (`nobody`) can reach.

use super::*;
use runv_agent_protocol::ShareLocation;

#[test]
#[ignore = "needs root: bind mounts"]
fn root_bind_file_and_directory_then_unmount_and_remove() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("rootfs")).unwrap();
    std::fs::write(src.join("rootfs/hello"), "hi").unwrap();
    std::fs::write(src.join("hosts"), "127.0.0.1 x").unwrap();
    // The container directory exists (Root::create); arrange makes the share in it.
    std::fs::create_dir(t.path().join("state")).unwrap();
    let share = t.path().join("state/share");
    let entries = vec![
        ShareEntry {
            host_path: src.join("rootfs"),
            location: ShareLocation::new("runv", "c1/rootfs").unwrap(),
            kind: EntryKind::Directory,
            readonly: true,
            recursive: false,
            purpose: EntryPurpose::Rootfs,
        },
        ShareEntry {
            host_path: src.join("hosts"),
            location: ShareLocation::new("runv", "c1/mounts/0/hosts").unwrap(),
            kind: EntryKind::File,
            readonly: true,
            recursive: false,
            purpose: EntryPurpose::BindMount {
                index: 0,
                destination: "/etc/hosts".into(),
            },
        },
    ];
    let mut made = vec![];
    arrange(&share, &entries, &mut made).unwrap();
    assert_eq!(made.len(), 2);
    assert_eq!(
        std::fs::read_to_string(share.join("c1/rootfs/hello")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_to_string(share.join("c1/mounts/0/hosts")).unwrap(),
        "127.0.0.1 x"
    );
    assert!(std::fs::write(share.join("c1/mounts/0/hosts"), "x").is_err());
    // The rootfs stays writable (the guest makes it read-only); a read-only bind
    // is read-only on the host side too.
    std::fs::write(share.join("c1/rootfs/new"), "x").unwrap();
    std::fs::remove_file(share.join("c1/rootfs/new")).unwrap();
    let state = t.path().join("state");
    assert!(matches!(
        remove_state_dir(&state),
        Err(ShareError::StillMounted { .. })
    ));
    assert!(unmount_all(&made).is_empty());
    remove_state_dir(&state).unwrap();
    assert!(!state.exists());
    // The user's files are untouched.
    assert_eq!(
        std::fs::read_to_string(src.join("rootfs/hello")).unwrap(),
        "hi"
    );
}

#[test]
#[ignore = "needs root: bind mounts (without it the mount fails for want of privilege)"]
fn root_a_missing_source_fails_and_records_nothing() {
    let t = tempfile::tempdir().unwrap();
    let entries = vec![ShareEntry {
        host_path: t.path().join("absent"),
        location: ShareLocation::new("runv", "c1/rootfs").unwrap(),
        kind: EntryKind::Directory,
        readonly: false,
        recursive: false,
        purpose: EntryPurpose::Rootfs,
    }];
    let mut made = vec![];
    let e = arrange(&t.path().join("share"), &entries, &mut made).unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    assert!(
        matches!(
            e,
            ShareError::Mount {
                source: nix::Error::ENOENT,
                ..
            }
        ),
        "{e}"
    );
    assert!(made.is_empty());
}

// --- What an unprivileged host user can reach (docs/security.md, "The state directory
// and the share"). Each fixture lives on a fresh tmpfs (suid and dev allowed), so what
// the tests see is runv's doing, not the host's /tmp.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::state::Root;

const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// Runs `args` as `nobody` (uid and gid 65534, no supplementary groups).
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}").as_str(),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn tmpfs(at: &Path) {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", at.display()));
}

/// `<t>` (a tmpfs, 0755): `bundle/` (0700: private, as a user's bundle usually is) with
/// `rootfs/` (a `sub/` tmpfs in it) and `vol/` (a `sub/` tmpfs in it); `root/`, runv's
/// state root (made by runv: it does not exist yet), with the container `c1`.
struct Fixture {
    t: tempfile::TempDir,
    bundle: PathBuf,
    root: Root,
    locked: Option<crate::state::Locked>,
    made: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        let t = tempfile::tempdir().unwrap();
        tmpfs(t.path());
        let bundle = t.path().join("bundle");
        for d in ["rootfs/sub", "vol/sub"] {
            std::fs::create_dir_all(bundle.join(d)).unwrap();
        }
        chmod(&bundle, 0o700);
        tmpfs(&bundle.join("rootfs/sub"));
        tmpfs(&bundle.join("vol/sub"));
        std::fs::write(bundle.join("rootfs/hello"), "secret").unwrap();
        chmod(&bundle.join("rootfs/hello"), 0o644);
        let root = Root::new(t.path().join("root"));
        let locked = Some(root.create("c1").unwrap());
        Fixture {
            t,
            bundle,
            root,
            locked,
            made: vec![],
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.dir("c1")
    }

    fn share(&self) -> PathBuf {
        self.dir().join("share")
    }

    /// What create does: `share/` made (as sandbox/mod.rs makes it), then arranged with
    /// the rootfs and a read-only `rbind` volume, through `api`.
    fn arrange(&mut self, api: MountApi) {
        std::fs::create_dir(self.share()).unwrap();
        let entries = vec![
            ShareEntry {
                host_path: self.bundle.join("rootfs"),
                location: ShareLocation::new("runv", "c1/rootfs").unwrap(),
                kind: EntryKind::Directory,
                readonly: false,
                recursive: true,
                purpose: EntryPurpose::Rootfs,
            },
            ShareEntry {
                host_path: self.bundle.join("vol"),
                location: ShareLocation::new("runv", "c1/mounts/0/vol").unwrap(),
                kind: EntryKind::Directory,
                readonly: true,
                recursive: true,
                purpose: EntryPurpose::BindMount {
                    index: 0,
                    destination: "/vol".into(),
                },
            },
        ];
        let share = self.share();
        arrange_with(&share, &entries, &mut self.made, api).unwrap();
    }

    /// Opens every directory on the way to the share to everyone, so that a test sees
    /// what the mount flags alone do (as if the modes had been left wide).
    fn open_up(&self) {
        for d in [
            self.root.path.clone(),
            self.dir(),
            self.share(),
            self.share().join("c1"),
        ] {
            chmod(&d, 0o755);
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for w in unmount_all(&self.made) {
            eprintln!("{w}");
        }
        drop(self.locked.take());
        // The tmpfs and the ones in the bundle go with it.
        let _ = umount2(self.t.path(), MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "needs root: bind mounts, and setpriv to act as nobody"]
fn root_an_unprivileged_user_cannot_read_under_the_share() {
    for api in [MountApi::Auto, MountApi::Remount] {
        an_unprivileged_user_cannot_read_under_the_share_with(api);
    }
}

fn an_unprivileged_user_cannot_read_under_the_share_with(api: MountApi) {
    let mut f = Fixture::new();
    // A state root that already exists and is wide open (left alone by runv): the
    // share must still be private.
    chmod(&f.root.path, 0o755);
    f.arrange(api);
    let hello = f.share().join("c1/rootfs/hello");
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "secret");
    let bundle_hello = f.bundle.join("rootfs/hello");
    // The bundle is private...
    let o = as_nobody(&["cat", bundle_hello.to_str().unwrap()]);
    assert!(!o.status.success(), "nobody read the bundle");
    // ...and so is its way through runv's state directory.
    let o = as_nobody(&["cat", hello.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "nobody read {} through the share: {:?}",
        hello.display(),
        String::from_utf8_lossy(&o.stdout)
    );
    let o = as_nobody(&["ls", f.share().to_str().unwrap()]);
    assert!(!o.status.success(), "nobody listed the share");
    let mode = std::fs::metadata(f.share()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "share mode {mode:o}");
}

/// Copies `id` into `dir` as a setuid-root binary (what a guest, root over virtio-fs,
/// can do in its rootfs) and runs it as nobody: the effective uid it prints.
fn setuid_id_as_nobody(dir: &Path) -> String {
    let id = dir.join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    chmod(&id, 0o4755);
    let o = as_nobody(&[id.to_str().unwrap(), "-u"]);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root: bind mounts, setuid files, and setpriv to act as nobody"]
fn root_a_setuid_binary_in_the_rootfs_is_not_setuid_through_the_share() {
    for api in [MountApi::Auto, MountApi::Remount] {
        a_setuid_binary_in_the_rootfs_is_not_setuid_through_the_share_with(api);
    }
}

fn a_setuid_binary_in_the_rootfs_is_not_setuid_through_the_share_with(api: MountApi) {
    let mut f = Fixture::new();
    f.arrange(api);
    f.open_up();
    let rootfs = f.share().join("c1/rootfs");
    // The check itself works: on the bundle's own tmpfs the bit is honoured.
    let bundle_sub = f.bundle.join("rootfs/sub");
    chmod(&f.bundle, 0o755);
    assert_eq!(
        setuid_id_as_nobody(&bundle_sub),
        "0",
        "control: setuid works"
    );
    std::fs::remove_file(bundle_sub.join("id")).unwrap();
    // Through the share: the rootfs mount and its submount are nosuid.
    assert_eq!(setuid_id_as_nobody(&rootfs), NOBODY.to_string());
    assert_eq!(setuid_id_as_nobody(&rootfs.join("sub")), NOBODY.to_string());
}

#[test]
#[ignore = "needs root: bind mounts and mknod"]
fn root_a_device_node_in_the_rootfs_cannot_be_opened_through_the_share() {
    for api in [MountApi::Auto, MountApi::Remount] {
        a_device_node_in_the_rootfs_cannot_be_opened_through_the_share_with(api);
    }
}

fn a_device_node_in_the_rootfs_cannot_be_opened_through_the_share_with(api: MountApi) {
    let mut f = Fixture::new();
    f.arrange(api);
    let rootfs = f.share().join("c1/rootfs");
    for dir in [rootfs.clone(), rootfs.join("sub")] {
        let node = dir.join("null");
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        // Not even root opens it: the mount is nodev.
        let e = std::fs::File::open(&node)
            .err()
            .unwrap_or_else(|| panic!("{} opened: the mount is not nodev", node.display()));
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    }
    // The control: the same node on the bundle's own tmpfs opens.
    std::fs::File::open(f.bundle.join("rootfs/null")).unwrap();
}

#[test]
#[ignore = "needs root: bind mounts"]
fn root_a_read_only_rbind_volume_is_read_only_in_every_submount() {
    for api in [MountApi::Auto, MountApi::Remount] {
        a_read_only_rbind_volume_is_read_only_in_every_submount_with(api);
    }
}

fn a_read_only_rbind_volume_is_read_only_in_every_submount_with(api: MountApi) {
    let mut f = Fixture::new();
    f.arrange(api);
    let vol = f.share().join("c1/mounts/0/vol");
    for p in [vol.join("x"), vol.join("sub/x")] {
        let e = std::fs::write(&p, "x")
            .err()
            .unwrap_or_else(|| panic!("{} was written: not read-only", p.display()));
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: {e}", p.display());
    }
    // The source stays writable.
    std::fs::write(f.bundle.join("vol/sub/x"), "x").unwrap();
    // The rootfs stays writable on the host (the guest makes it read-only).
    std::fs::write(f.share().join("c1/rootfs/sub/y"), "y").unwrap();
}

#[test]
fn mountinfo_mount_points_are_unescaped() {
    let text = "36 35 98:0 / /mnt/a\\040b\\011c\\134d rw - ext3 /dev/x rw\n\
                37 35 98:0 / /plain\\04 rw - ext3 /dev/x rw\n";
    assert_eq!(
        parse_mount_points(text),
        vec![PathBuf::from("/mnt/a b\tc\\d"), PathBuf::from("/plain\\04")]
    );
}

#[test]
fn the_share_directory_is_made_private_and_must_be_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let share = t.path().join("share");
    std::fs::create_dir(&share).unwrap();
    chmod(&share, 0o755);
    arrange(&share, &[], &mut vec![]).unwrap();
    let mode = std::fs::metadata(&share).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, SHARE_DIR_MODE, "{mode:o}");
    let fresh = t.path().join("fresh");
    arrange(&fresh, &[], &mut vec![]).unwrap();
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, SHARE_DIR_MODE, "{mode:o}");
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&share, &link).unwrap();
    let e = arrange(&link, &[], &mut vec![]).unwrap_err().to_string();
    assert!(e.contains("link") && e.contains("not a directory"), "{e}");
}

/// The kernel's release as (major, minor).
fn kernel_version() -> (u32, u32) {
    let r = nix::sys::utsname::uname().unwrap();
    let rel = r.release().to_string_lossy().into_owned();
    let mut it = rel.split(['.', '-']).map(|x| x.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
#[ignore = "needs root: bind mounts"]
fn root_the_new_mount_api_is_used_where_the_kernel_has_it() {
    if kernel_version() < (5, 12) {
        eprintln!("kernel older than 5.12: the remount fallback is what runs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dst).unwrap();
    assert_eq!(detached_bind(&src, &dst, true, true), Ok(true));
    let flags = statvfs(&dst).unwrap().flags();
    assert!(
        flags.contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RDONLY),
        "{flags:?}"
    );
    umount2(&dst, MntFlags::MNT_DETACH).unwrap();
}
