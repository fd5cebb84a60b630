//! Extracting one layer tar on its own into an empty directory.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::SFlag;
use tar::EntryType;

use super::fsops::{self, NodeMeta};
use super::resolve::{clean_entry_path, join, resolve_in_root};
use super::{LayerChanges, UnpackError, UnpackOptions};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

/// Extracts the (already decompressed) layer tar read from `reader` into `dest`, an empty
/// directory. Nothing is ever created outside `dest`: entry names climbing out with `..`
/// are rejected, absolute names are taken relative to `dest`, and every symlink met while
/// resolving an entry's parent directory is resolved inside `dest`. On error `dest` is
/// left partly filled; the caller removes it.
pub fn extract_layer<R: Read>(
    reader: R,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<LayerChanges, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut x = Extractor {
        dest,
        opts,
        changes: LayerChanges::default(),
        implicit: BTreeSet::new(),
        dirs: Vec::new(),
    };
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let entry = entry.map_err(UnpackError::Tar)?;
        x.entry(entry)?;
    }
    // Directory modes and times last, deepest first, so that writing into a directory
    // neither fails on a read-only mode nor bumps its mtime afterwards.
    x.dirs.sort_by_key(|(p, _)| Reverse(p.components().count()));
    for (path, meta) in &x.dirs {
        // A directory a later entry replaced by a file keeps that file's metadata.
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        fsops::set_meta(path, false, meta, opts.privileged)
            .map_err(UnpackError::io("setting metadata of", path))?;
    }
    x.changes.implicit_dirs = x.implicit.into_iter().collect();
    Ok(x.changes)
}

struct Extractor<'a> {
    dest: &'a Path,
    opts: UnpackOptions,
    changes: LayerChanges,
    implicit: BTreeSet<PathBuf>,
    dirs: Vec<(PathBuf, NodeMeta)>,
}

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let perr = |source| UnpackError::Path {
            entry: raw.clone(),
            source,
        };
        let comps = clean_entry_path(&raw).map_err(perr)?;
        let Some((base, parent)) = comps.split_last() else {
            return Ok(()); // the root itself
        };
        let base_bytes = base.as_bytes();
        if base_bytes == WHITEOUT_OPAQUE {
            self.changes.opaque_dirs.push(join(parent));
            return Ok(());
        }
        if base_bytes.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // other aufs bookkeeping (.wh..wh.plnk and the like)
        }
        if let Some(name) = base_bytes.strip_prefix(WHITEOUT_PREFIX) {
            if name.is_empty() || name == b"." || name == b".." {
                return Err(perr(super::PathError::Invalid(raw.clone())));
            }
            self.changes
                .whiteouts
                .push(join(parent).join(OsStr::from_bytes(name)));
            return Ok(());
        }

        let mut kind = entry.header().entry_type();
        if kind == EntryType::Regular && raw.as_os_str().as_bytes().ends_with(b"/") {
            kind = EntryType::Directory; // pre-POSIX tars mark directories by the slash only
        }
        use EntryType::*;
        if !matches!(
            kind,
            Regular | Continuous | GNUSparse | Directory | Symlink | Link | Char | Block | Fifo
        ) {
            tracing::debug!(entry = %raw.display(), ?kind, "skipping tar entry of unsupported kind");
            return Ok(());
        }
        let parent_res = resolve_in_root(self.dest, parent).map_err(perr)?;
        self.make_parents(&raw, &parent_res)?;
        let rel = join(&parent_res).join(base);
        let target = self.dest.join(&rel);
        let meta = header_meta(&mut entry)?;
        if kind == EntryType::Link {
            let link = link_name(&mut entry, &raw)?;
            if clean_entry_path(&link).ok().as_deref() == Some(&comps[..]) {
                return Ok(()); // a hard link to itself: nothing to do, and removing would lose it
            }
        }

        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() && kind == EntryType::Directory => {}
            Ok(_) => {
                fsops::remove_existing(&target).map_err(UnpackError::io("replacing", &target))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(UnpackError::io("inspecting", &target)(e)),
        }

        let privileged = self.opts.privileged;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = fsops::create_new_file(&target)
                    .map_err(UnpackError::io("creating", &target))?;
                io::copy(&mut entry, &mut f).map_err(UnpackError::Tar)?;
                drop(f);
                fsops::set_meta(&target, false, &meta, privileged)
                    .map_err(UnpackError::io("setting metadata of", &target))?;
            }
            EntryType::Directory => {
                if !target.is_dir() {
                    fsops::create_dir(&target)
                        .map_err(UnpackError::io("creating directory", &target))?;
                }
                self.implicit.remove(&rel);
                self.dirs.push((target, meta));
            }
            EntryType::Symlink => {
                let link = link_name(&mut entry, &raw)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(UnpackError::io("creating symlink", &target))?;
                fsops::set_meta(&target, true, &meta, privileged)
                    .map_err(UnpackError::io("setting metadata of", &target))?;
            }
            EntryType::Link => {
                let link = link_name(&mut entry, &raw)?;
                self.hard_link(&raw, &link, &rel, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ if !privileged => return Err(UnpackError::DeviceNotAllowed { entry: raw }),
                    _ => {
                        let h = entry.header();
                        let major = h.device_major().map_err(UnpackError::Tar)?.unwrap_or(0);
                        let minor = h.device_minor().map_err(UnpackError::Tar)?.unwrap_or(0);
                        let flag = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (flag, nix::sys::stat::makedev(major.into(), minor.into()))
                    }
                };
                fsops::make_node(&target, sflag, dev)
                    .map_err(UnpackError::io("creating node", &target))?;
                fsops::set_meta(&target, false, &meta, privileged)
                    .map_err(UnpackError::io("setting metadata of", &target))?;
            }
            _ => unreachable!("entry kinds were filtered above"),
        }
        Ok(())
    }

    /// Creates the missing directories of `parent` (resolved components), recording them
    /// as implicit.
    fn make_parents(&mut self, raw: &Path, parent: &[OsString]) -> Result<(), UnpackError> {
        let mut rel = PathBuf::new();
        for c in parent {
            rel.push(c);
            let p = self.dest.join(&rel);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: raw.to_path_buf(),
                        parent: rel,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fsops::create_dir(&p).map_err(UnpackError::io("creating directory", &p))?;
                    self.implicit.insert(rel.clone());
                }
                Err(e) => return Err(UnpackError::io("inspecting", &p)(e)),
            }
        }
        Ok(())
    }

    /// A hard link must name a non-directory already inside the root; `..` climbing out is
    /// rejected, an absolute target is taken relative to the root, and the target's
    /// parent is resolved inside the root. A target absent from this layer is recorded
    /// and linked when the layer is applied over the lower ones.
    fn hard_link(
        &mut self,
        raw: &Path,
        link: &Path,
        rel: &Path,
        target: &Path,
    ) -> Result<(), UnpackError> {
        let bad = |why| UnpackError::BadHardlink {
            entry: raw.to_path_buf(),
            target: link.to_path_buf(),
            why,
        };
        let lcomps = clean_entry_path(link).map_err(|_| bad("climbs out of the root"))?;
        let Some((lbase, lparent)) = lcomps.split_last() else {
            return Err(bad("is the root directory"));
        };
        let lparent_res =
            resolve_in_root(self.dest, lparent).map_err(|source| UnpackError::Path {
                entry: raw.to_path_buf(),
                source,
            })?;
        let src = self.dest.join(join(&lparent_res)).join(lbase);
        match std::fs::symlink_metadata(&src) {
            Ok(m) if m.is_dir() => Err(bad("is a directory")),
            Ok(_) => std::fs::hard_link(&src, target)
                .map_err(UnpackError::io("creating hard link", target)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.changes
                    .lower_links
                    .push((rel.to_path_buf(), join(&lcomps)));
                Ok(())
            }
            Err(e) => Err(UnpackError::io("inspecting", &src)(e)),
        }
    }
}

fn link_name<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<PathBuf, UnpackError> {
    entry
        .link_name()
        .map_err(UnpackError::Tar)?
        .map(|c| c.into_owned())
        .ok_or_else(|| UnpackError::BadHardlink {
            entry: raw.to_path_buf(),
            target: PathBuf::new(),
            why: "is missing from the entry",
        })
}

fn header_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<NodeMeta, UnpackError> {
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Tar)? {
        for ext in pax {
            let ext = ext.map_err(UnpackError::Tar)?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((
                    OsStr::from_bytes(name).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            }
        }
    }
    let h = entry.header();
    let num = |r: io::Result<u64>| r.map_err(UnpackError::Tar);
    Ok(NodeMeta {
        mode: h.mode().map_err(UnpackError::Tar)? & 0o7777,
        uid: u32::try_from(num(h.uid())?).unwrap_or(u32::MAX),
        gid: u32::try_from(num(h.gid())?).unwrap_or(u32::MAX),
        mtime: FileTime::from_unix_time(i64::try_from(num(h.mtime())?).unwrap_or(0), 0),
        xattrs,
    })
}
