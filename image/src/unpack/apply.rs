//! Applying an extracted layer onto a rootfs, in the way a tar layer would apply.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use super::fsops::{self, NodeMeta};
use super::resolve::{clean_entry_path, join, resolve_in_root};
use super::{LayerChanges, UnpackError, UnpackOptions};

/// Applies the layer extracted in `layer_root` (with its recorded `changes`) onto
/// `rootfs`: first the whiteouts and opaque directories delete from the lower layers, then
/// the layer's files are copied in, directories merged with directories and anything else
/// replaced. Every path is resolved inside `rootfs`.
pub fn apply_layer(
    layer_root: &Path,
    changes: &LayerChanges,
    rootfs: &Path,
    opts: UnpackOptions,
) -> Result<(), UnpackError> {
    for dir in &changes.opaque_dirs {
        let comps = clean(dir)?;
        let res = resolve_in_root(rootfs, &comps).map_err(|source| UnpackError::Path {
            entry: dir.clone(),
            source,
        })?;
        let path = rootfs.join(join(&res));
        if path.is_dir() {
            let rd =
                std::fs::read_dir(&path).map_err(UnpackError::io("reading directory", &path))?;
            for child in rd {
                let child = child.map_err(UnpackError::io("reading directory", &path))?;
                fsops::remove_existing(&child.path())
                    .map_err(UnpackError::io("removing", child.path()))?;
            }
        }
    }
    for w in &changes.whiteouts {
        let path = resolve_parent(rootfs, w)?;
        fsops::remove_existing(&path).map_err(UnpackError::io("removing whited-out", &path))?;
    }
    let mut copier = Copier {
        rootfs,
        opts,
        implicit: changes.implicit_dirs.iter().cloned().collect(),
        links: HashMap::new(),
        dirs: Vec::new(),
    };
    copier.copy_dir(layer_root, &PathBuf::new(), &[])?;
    for (path, target) in &changes.lower_links {
        let bad = |why| UnpackError::BadHardlink {
            entry: path.clone(),
            target: target.clone(),
            why,
        };
        let src = resolve_parent(rootfs, target)?;
        match std::fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => return Err(bad("is a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(bad("exists in neither this layer nor a lower one"))
            }
            Err(e) => return Err(UnpackError::io("inspecting", &src)(e)),
        }
        let dst = resolve_parent(rootfs, path)?;
        fsops::remove_existing(&dst).map_err(UnpackError::io("replacing", &dst))?;
        std::fs::hard_link(&src, &dst).map_err(UnpackError::io("creating hard link", &dst))?;
    }
    copier
        .dirs
        .sort_by_key(|(p, _)| Reverse(p.components().count()));
    for (path, meta) in &copier.dirs {
        fsops::set_meta(path, false, meta, opts.privileged)
            .map_err(UnpackError::io("setting metadata of", path))?;
    }
    Ok(())
}

fn clean(p: &Path) -> Result<Vec<OsString>, UnpackError> {
    clean_entry_path(p).map_err(|source| UnpackError::Path {
        entry: p.to_path_buf(),
        source,
    })
}

/// `rootfs` joined with `p`'s parent resolved inside `rootfs` and `p`'s last component
/// (not followed). `p` must name something below the root.
fn resolve_parent(rootfs: &Path, p: &Path) -> Result<PathBuf, UnpackError> {
    let comps = clean(p)?;
    let Some((base, parent)) = comps.split_last() else {
        return Err(UnpackError::Path {
            entry: p.to_path_buf(),
            source: super::PathError::Invalid(p.to_path_buf()),
        });
    };
    let res = resolve_in_root(rootfs, parent).map_err(|source| UnpackError::Path {
        entry: p.to_path_buf(),
        source,
    })?;
    Ok(rootfs.join(join(&res)).join(base))
}

struct Copier<'a> {
    rootfs: &'a Path,
    opts: UnpackOptions,
    implicit: HashSet<PathBuf>,
    /// (dev, ino) of multiply-linked layer files -> their copy in the rootfs.
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, NodeMeta)>,
}

impl Copier<'_> {
    /// Copies the children of layer directory `src` (layer-relative `rel`) into the rootfs
    /// directory `dst` (resolved rootfs-relative components).
    fn copy_dir(&mut self, src: &Path, rel: &Path, dst: &[OsString]) -> Result<(), UnpackError> {
        let mut names: Vec<OsString> = std::fs::read_dir(src)
            .map_err(UnpackError::io("reading directory", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(UnpackError::io("reading directory", src))?;
        names.sort();
        let dst_dir = self.rootfs.join(join(dst));
        for name in names {
            let s = src.join(&name);
            let crel = rel.join(&name);
            let target = dst_dir.join(&name);
            let m = std::fs::symlink_metadata(&s).map_err(UnpackError::io("inspecting", &s))?;
            if m.is_dir() {
                let mut child = dst.to_vec();
                child.push(name.clone());
                let child = if self.implicit.contains(&crel) {
                    self.implicit_dir(&crel, &child)?
                } else {
                    self.explicit_dir(&s, &target)?;
                    child
                };
                self.copy_dir(&s, &crel, &child)?;
                continue;
            }
            fsops::remove_existing(&target).map_err(UnpackError::io("replacing", &target))?;
            self.copy_node(&s, &m, &crel, &target)?;
        }
        Ok(())
    }

    /// A directory the layer created only to hold entries: follow the rootfs's symlinks to
    /// where it already is, or create it there.
    fn implicit_dir(
        &mut self,
        crel: &Path,
        child: &[OsString],
    ) -> Result<Vec<OsString>, UnpackError> {
        let res = resolve_in_root(self.rootfs, child).map_err(|source| UnpackError::Path {
            entry: crel.to_path_buf(),
            source,
        })?;
        let mut p = self.rootfs.to_path_buf();
        for (i, c) in res.iter().enumerate() {
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: crel.to_path_buf(),
                        parent: join(&res[..=i]),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fsops::create_dir(&p).map_err(UnpackError::io("creating directory", &p))?
                }
                Err(e) => return Err(UnpackError::io("inspecting", &p)(e)),
            }
        }
        Ok(res)
    }

    fn explicit_dir(&mut self, src: &Path, target: &Path) -> Result<(), UnpackError> {
        match std::fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fsops::remove_existing(target).map_err(UnpackError::io("replacing", target))?;
                fsops::create_dir(target).map_err(UnpackError::io("creating directory", target))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fsops::create_dir(target).map_err(UnpackError::io("creating directory", target))?
            }
            Err(e) => return Err(UnpackError::io("inspecting", target)(e)),
        }
        let meta = NodeMeta::of(src).map_err(UnpackError::io("reading metadata of", src))?;
        self.dirs.push((target.to_path_buf(), meta));
        Ok(())
    }

    fn copy_node(
        &mut self,
        s: &Path,
        m: &std::fs::Metadata,
        crel: &Path,
        target: &Path,
    ) -> Result<(), UnpackError> {
        let ft = m.file_type();
        let privileged = self.opts.privileged;
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                return std::fs::hard_link(first, target)
                    .map_err(UnpackError::io("creating hard link", target));
            }
        }
        let meta = NodeMeta::of(s).map_err(UnpackError::io("reading metadata of", s))?;
        let is_symlink = ft.is_symlink();
        if ft.is_file() {
            let mut from = std::fs::File::open(s).map_err(UnpackError::io("opening", s))?;
            let mut to =
                fsops::create_new_file(target).map_err(UnpackError::io("creating", target))?;
            io::copy(&mut from, &mut to).map_err(UnpackError::io("copying into", target))?;
            if m.nlink() > 1 {
                self.links.insert((m.dev(), m.ino()), target.to_path_buf());
            }
        } else if is_symlink {
            let link = std::fs::read_link(s).map_err(UnpackError::io("reading symlink", s))?;
            std::os::unix::fs::symlink(&link, target)
                .map_err(UnpackError::io("creating symlink", target))?;
        } else if ft.is_fifo() {
            fsops::make_node(target, SFlag::S_IFIFO, 0)
                .map_err(UnpackError::io("creating node", target))?;
        } else if ft.is_char_device() || ft.is_block_device() {
            if !privileged {
                return Err(UnpackError::DeviceNotAllowed {
                    entry: crel.to_path_buf(),
                });
            }
            let flag = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            fsops::make_node(target, flag, m.rdev())
                .map_err(UnpackError::io("creating node", target))?;
        } else {
            tracing::debug!(path = %s.display(), "skipping socket in layer");
            return Ok(());
        }
        fsops::set_meta(target, is_symlink, &meta, privileged)
            .map_err(UnpackError::io("setting metadata of", target))
    }
}
