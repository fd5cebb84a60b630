//! Crafted layer tarballs against extraction and application. Every hostile case also
//! checks that nothing appeared outside the directory being written.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::*;

/// Builds tar archives with raw names, so that `..` and absolute paths (which
/// `tar::Builder` refuses to write) can be crafted.
#[derive(Default)]
pub(crate) struct TarBuilder {
    b: Option<tar::Builder<Vec<u8>>>,
}

impl TarBuilder {
    fn builder(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.b.get_or_insert_with(|| tar::Builder::new(Vec::new()))
    }

    fn push(
        &mut self,
        name: &str,
        kind: EntryType,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        let raw = h.as_old_mut();
        assert!(name.len() < raw.name.len() && link.len() < raw.linkname.len());
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.builder().append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.push(name, EntryType::Regular, "", 0o644, data)
    }
    pub fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.push(name, EntryType::Regular, "", mode, data)
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(name, EntryType::Directory, "", 0o755, b"")
    }
    pub fn dir_mode(&mut self, name: &str, mode: u32) -> &mut Self {
        self.push(name, EntryType::Directory, "", mode, b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(name, EntryType::Symlink, target, 0o777, b"")
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.push(name, EntryType::Link, target, 0o644, b"")
    }
    pub fn device(&mut self, name: &str) -> &mut Self {
        self.push(name, EntryType::Char, "", 0o666, b"")
    }
    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.push(name, EntryType::Fifo, "", 0o600, b"")
    }
    pub fn finish(&mut self) -> Vec<u8> {
        self.b
            .take()
            .unwrap_or_else(|| tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

/// A scratch area: `base/root` is written to, `base/outside` must stay empty.
struct Scratch {
    /// A TempTree: some cases leave read-only directories.
    _t: crate::testdir::TempTree,
    base: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let t = crate::testdir::TempTree::new();
        let base = t.path().to_path_buf();
        std::fs::create_dir(base.join("outside")).unwrap();
        Self { _t: t, base }
    }
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.base.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    /// Asserts that only the expected top-level names exist and `outside` is empty.
    fn assert_contained(&self, expected: &[&str]) {
        let mut names: Vec<String> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.push("outside".into());
        want.sort();
        assert_eq!(names, want, "unexpected files next to the root");
        let outside: Vec<_> = std::fs::read_dir(self.base.join("outside"))
            .unwrap()
            .collect();
        assert!(
            outside.is_empty(),
            "something was written outside the root: {outside:?}"
        );
    }
}

const UNPRIV: UnpackOptions = UnpackOptions { privileged: false };

fn extract(tar: &[u8], dest: &Path) -> Result<LayerChanges, UnpackError> {
    extract_layer(tar, dest, UNPRIV)
}

/// Extracts each layer into its own directory under `s` and applies them in order to
/// `s/rootfs`.
fn build_rootfs(s: &Scratch, layers: &[Vec<u8>]) -> Result<PathBuf, UnpackError> {
    let rootfs = s.dir("rootfs");
    for (i, tar) in layers.iter().enumerate() {
        let dir = s.dir(&format!("layer{i}"));
        let changes = extract(tar, &dir)?;
        apply_layer(&dir, &changes, &rootfs, UNPRIV)?;
    }
    Ok(rootfs)
}

#[test]
fn dotdot_entries_are_rejected() {
    for name in ["../outside/evil", "a/../../outside/evil", "./../../x"] {
        let s = Scratch::new();
        let root = s.dir("root");
        let tar = TarBuilder::default()
            .file("ok", b"1")
            .file(name, b"pwned")
            .finish();
        let err = extract(&tar, &root).unwrap_err();
        assert!(
            matches!(
                &err,
                UnpackError::Path {
                    source: PathError::Escapes(_),
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains(name),
            "error names the entry: {err}"
        );
        s.assert_contained(&["root"]);
    }
}

#[test]
fn absolute_entries_land_inside_the_root() {
    let s = Scratch::new();
    let root = s.dir("root");
    let outside = s.base.join("outside");
    let abs = format!("{}/evil", outside.display());
    let tar = TarBuilder::default()
        .file("/etc/abs", b"a")
        .file(&abs, b"b")
        .finish();
    extract(&tar, &root).unwrap();
    assert_eq!(std::fs::read(root.join("etc/abs")).unwrap(), b"a");
    assert_eq!(
        std::fs::read(root.join(abs.trim_start_matches('/'))).unwrap(),
        b"b"
    );
    s.assert_contained(&["root"]);
}

#[test]
fn writes_through_symlinks_stay_inside_the_root() {
    let s = Scratch::new();
    let root = s.dir("root");
    let outside = s.base.join("outside");
    let tar = TarBuilder::default()
        .symlink("abs", outside.to_str().unwrap())
        .file("abs/pwned1", b"x")
        .symlink("up", "../../../../../../../..")
        .file("up/pwned2", b"x")
        .symlink("rel", "../outside")
        .file("rel/pwned3", b"x")
        .finish();
    extract(&tar, &root).unwrap();
    assert!(root
        .join(outside.strip_prefix("/").unwrap())
        .join("pwned1")
        .is_file());
    assert!(root.join("pwned2").is_file());
    assert!(root.join("outside/pwned3").is_file());
    // The symlinks themselves stay as written: they are only content.
    assert_eq!(std::fs::read_link(root.join("abs")).unwrap(), outside);
    s.assert_contained(&["root"]);
}

#[test]
fn later_layer_writes_through_var_run_symlink() {
    let s = Scratch::new();
    let l1 = TarBuilder::default()
        .dir("run")
        .dir("var")
        .symlink("var/run", "/run")
        .finish();
    let l2 = TarBuilder::default()
        .file("var/run/app.pid", b"42")
        .finish();
    let rootfs = build_rootfs(&s, &[l1, l2]).unwrap();
    assert_eq!(std::fs::read(rootfs.join("run/app.pid")).unwrap(), b"42");
    assert!(std::fs::symlink_metadata(rootfs.join("var/run"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A layer whose symlink points out of the root, then a later layer writing through it.
    let s2 = Scratch::new();
    let outside = s2.base.join("outside");
    let l1 = TarBuilder::default()
        .symlink("data", outside.to_str().unwrap())
        .finish();
    let l2 = TarBuilder::default().file("data/pwned", b"x").finish();
    let rootfs = build_rootfs(&s2, &[l1, l2]).unwrap();
    assert!(rootfs
        .join(outside.strip_prefix("/").unwrap())
        .join("pwned")
        .is_file());
    s2.assert_contained(&["rootfs", "layer0", "layer1"]);
}

#[test]
fn explicit_directory_replaces_a_symlink() {
    // containerd's rule: only a directory over a directory merges.
    let s = Scratch::new();
    let l1 = TarBuilder::default()
        .dir("run")
        .symlink("var/run", "/run")
        .finish();
    let l2 = TarBuilder::default()
        .dir("var/run/")
        .file("var/run/x", b"1")
        .finish();
    let rootfs = build_rootfs(&s, &[l1, l2]).unwrap();
    assert!(rootfs.join("var/run").symlink_metadata().unwrap().is_dir());
    assert!(rootfs.join("var/run/x").is_file());
    assert!(!rootfs.join("run/x").exists());
}

#[test]
fn hard_links_out_of_the_root_are_rejected() {
    let s = Scratch::new();
    let root = s.dir("root");
    std::fs::write(s.base.join("secret"), b"s").unwrap();
    let tar = TarBuilder::default().hardlink("link", "../secret").finish();
    let err = extract(&tar, &root).unwrap_err();
    assert!(matches!(err, UnpackError::BadHardlink { .. }), "{err}");
    assert!(
        err.to_string().contains("../secret") && err.to_string().contains("climbs out"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(s.base.join("secret")).unwrap().nlink(), 1);
    std::fs::remove_file(s.base.join("secret")).unwrap();
    s.assert_contained(&["root"]);
}

#[test]
fn hard_link_through_a_symlink_resolves_inside() {
    let s = Scratch::new();
    let outside = s.base.join("outside");
    std::fs::write(outside.join("secret"), b"s").unwrap();
    // `escape` points at the real outside directory; a hard link through it must not
    // reach the real file, and with no such file in the root the apply fails.
    let tar = TarBuilder::default()
        .symlink("escape", outside.to_str().unwrap())
        .hardlink("link", "escape/secret")
        .finish();
    let err = build_rootfs(&s, &[tar]).unwrap_err();
    assert!(err.to_string().contains("exists in neither"), "{err}");
    assert_eq!(
        std::fs::metadata(outside.join("secret")).unwrap().nlink(),
        1
    );
    // An absolute target is taken inside the root too.
    let s2 = Scratch::new();
    let tar = TarBuilder::default()
        .hardlink("passwd", "/etc/passwd")
        .finish();
    let err = build_rootfs(&s2, &[tar]).unwrap_err();
    assert!(
        err.to_string().contains("etc/passwd") && err.to_string().contains("exists in neither"),
        "{err}"
    );
    assert!(!s2.base.join("rootfs/passwd").exists());
}

#[test]
fn hard_links_within_and_across_layers() {
    let s = Scratch::new();
    let l1 = TarBuilder::default().file("bin/busybox", b"BB").finish();
    let l2 = TarBuilder::default()
        .file("usr/a", b"A")
        .hardlink("usr/b", "usr/a")
        .hardlink("bin/sh", "bin/busybox")
        .finish();
    let rootfs = build_rootfs(&s, &[l1, l2]).unwrap();
    let ino = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("usr/a"), ino("usr/b"));
    assert_eq!(ino("bin/sh"), ino("bin/busybox"));
    assert_eq!(std::fs::read(rootfs.join("bin/sh")).unwrap(), b"BB");
}

#[test]
fn hard_link_to_a_directory_is_rejected() {
    let s = Scratch::new();
    let root = s.dir("root");
    let tar = TarBuilder::default().dir("d").hardlink("l", "d").finish();
    let err = extract(&tar, &root).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

fn fifo_and_null() -> Vec<u8> {
    TarBuilder::default()
        .fifo("fifo")
        .device("dev/null")
        .finish()
}

#[test]
fn device_nodes_need_privilege() {
    let s = Scratch::new();
    let root = s.dir("root");
    let tar = fifo_and_null();
    let err = extract(&tar, &root).unwrap_err();
    assert!(matches!(err, UnpackError::DeviceNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("dev/null"), "{err}");
    assert!(!root.join("dev/null").exists());
}

#[test]
#[ignore = "needs root: mknod of a character device"]
fn root_device_nodes_are_made_when_privileged() {
    let s = Scratch::new();
    let tar = fifo_and_null();
    let root = s.dir("root");
    let opts = UnpackOptions { privileged: true };
    let changes = extract_layer(&tar[..], &root, opts).unwrap();
    let m = std::fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
    let rootfs = s.dir("rootfs");
    apply_layer(&root, &changes, &rootfs, opts).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(rootfs.join("dev/null"))
            .unwrap()
            .rdev(),
        m.rdev()
    );
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(rootfs.join("fifo"))
            .unwrap()
            .file_type()
    ));
}

#[test]
fn whiteouts_and_opaque_directories() {
    let s = Scratch::new();
    let l1 = TarBuilder::default()
        .file("a/1", b"1")
        .file("a/2", b"2")
        .file("b/x", b"x")
        .file("b/y/z", b"z")
        .file("c/keep", b"k")
        .file("d", b"d")
        .finish();
    let l2 = TarBuilder::default()
        .file("a/.wh.1", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        .file(".wh.c", b"")
        .file(".wh.d", b"")
        .file("e/.wh..wh.plnk", b"")
        .finish();
    let rootfs = build_rootfs(&s, &[l1, l2.clone()]).unwrap();
    assert!(!rootfs.join("a/1").exists());
    assert!(rootfs.join("a/2").is_file());
    assert!(!rootfs.join("b/x").exists() && !rootfs.join("b/y").exists());
    assert!(rootfs.join("b/new").is_file());
    assert!(!rootfs.join("c").exists() && !rootfs.join("d").exists());
    // The markers themselves never reach the tree.
    let l2dir = s.base.join("layer1");
    assert!(!l2dir.join("a/.wh.1").exists() && !l2dir.join("b/.wh..wh..opq").exists());
    let changes = extract(&l2, &s.dir("again")).unwrap();
    assert_eq!(
        changes.whiteouts,
        vec![PathBuf::from("a/1"), PathBuf::from("c"), PathBuf::from("d")]
    );
    assert_eq!(changes.opaque_dirs, vec![PathBuf::from("b")]);
}

#[test]
fn whiteout_cannot_reach_outside() {
    let s = Scratch::new();
    std::fs::write(s.base.join("outside/victim"), b"v").unwrap();
    let outside = s.base.join("outside");
    let l1 = TarBuilder::default()
        .symlink("o", outside.to_str().unwrap())
        .finish();
    let l2 = TarBuilder::default()
        .file("o/.wh.victim", b"")
        .file(".wh..wh..opq", b"")
        .finish();
    build_rootfs(&s, &[l1, l2]).unwrap();
    assert!(s.base.join("outside/victim").is_file());
    let tar = TarBuilder::default()
        .file("../outside/.wh.victim", b"")
        .finish();
    assert!(extract(&tar, &s.dir("r2")).is_err());
    assert!(s.base.join("outside/victim").is_file());
}

#[test]
fn replaces_files_and_keeps_metadata() {
    let s = Scratch::new();
    let l1 = TarBuilder::default()
        .file("etc/conf", b"old")
        .dir("dir")
        .file("dir/f", b"1")
        .finish();
    let l2 = TarBuilder::default()
        .symlink("etc/conf", "conf.d/real")
        .file("dir", b"now a file")
        .dir_mode("ro", 0o555)
        .file_mode("ro/exe", 0o4755, b"#!")
        .finish();
    let rootfs = build_rootfs(&s, &[l1, l2]).unwrap();
    assert_eq!(
        std::fs::read_link(rootfs.join("etc/conf")).unwrap(),
        Path::new("conf.d/real")
    );
    assert_eq!(std::fs::read(rootfs.join("dir")).unwrap(), b"now a file");
    let ro = std::fs::metadata(rootfs.join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_600_000_000);
    let exe = std::fs::metadata(rootfs.join("ro/exe")).unwrap();
    assert_eq!(exe.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(exe.mtime(), 1_600_000_000);
}

#[test]
fn gzip_and_zstd_layers() {
    let tar = TarBuilder::default().file("hello", b"world").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, kind) in [
        (gz, crate::compress::Compression::Gzip),
        (zst, crate::compress::Compression::Zstd),
    ] {
        let s = Scratch::new();
        let root = s.dir("root");
        let (got, r) = crate::compress::decompress(&blob[..]).unwrap();
        assert_eq!(got, kind);
        extract_layer(r, &root, UNPRIV).unwrap();
        assert_eq!(std::fs::read(root.join("hello")).unwrap(), b"world");
    }
}

#[test]
fn truncated_tar_is_an_error() {
    let tar = TarBuilder::default().file("big", &[7u8; 4096]).finish();
    let s = Scratch::new();
    let err = extract(&tar[..1024], &s.dir("root")).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");
}

#[test]
fn file_as_parent_is_an_error() {
    let s = Scratch::new();
    let tar = TarBuilder::default()
        .file("f", b"")
        .file("f/x", b"")
        .finish();
    let err = extract(&tar, &s.dir("root")).unwrap_err();
    assert!(matches!(err, UnpackError::NotADirectory { .. }), "{err}");
}

#[test]
fn old_style_directory_entries() {
    let s = Scratch::new();
    let root = s.dir("root");
    let tar = TarBuilder::default()
        .file_mode("d/", 0o755, b"")
        .file("d/f", b"1")
        .finish();
    extract(&tar, &root).unwrap();
    assert!(root.join("d").is_dir());
    assert_eq!(std::fs::read(root.join("d/f")).unwrap(), b"1");
}

#[test]
fn hard_link_to_itself_is_a_no_op() {
    let s = Scratch::new();
    let l1 = TarBuilder::default().file("a", b"1").finish();
    let l2 = TarBuilder::default().hardlink("a", "./a").finish();
    let rootfs = build_rootfs(&s, &[l1, l2]).unwrap();
    assert_eq!(std::fs::read(rootfs.join("a")).unwrap(), b"1");
}

#[test]
fn directory_replaced_by_a_file_keeps_the_file_mode() {
    let s = Scratch::new();
    let root = s.dir("root");
    let tar = TarBuilder::default()
        .dir_mode("d", 0o751)
        .file_mode("d", 0o640, b"f")
        .push(
            "pax_global_header",
            EntryType::XGlobalHeader,
            "",
            0o644,
            b"",
        )
        .finish();
    extract(&tar, &root).unwrap();
    let m = std::fs::metadata(root.join("d")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert!(!root.join("pax_global_header").exists());
}
