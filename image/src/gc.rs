//! Garbage collection of the store: blobs and extracted layers no named image uses.
//!
//! Imports and bundle preparation hold a shared lock on `<root>/gc.lock` for their whole
//! run ([`Store::hold`]); [`Store::gc`] takes it exclusively, so it never removes the blobs
//! of an import that has not named its image yet, nor a layer being copied into a rootfs.
//! Containers never depend on the store once prepared: their rootfs is a copy.

use std::collections::HashSet;
use std::fs::File;

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::store::{Store, StoreError};
use crate::unpack;

/// A shared hold on the store's contents; see the module docs.
pub struct StoreHold {
    _lock: nix::fcntl::Flock<File>,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

impl Store {
    fn gc_lock(&self, arg: nix::fcntl::FlockArg) -> Result<nix::fcntl::Flock<File>, StoreError> {
        let p = self.root().join("gc.lock");
        let io = |op, source| StoreError::Io {
            op,
            path: p.clone(),
            source,
        };
        let f = File::create(&p).map_err(|e| io("creating", e))?;
        nix::fcntl::Flock::lock(f, arg).map_err(|(_, e)| io("locking", e.into()))
    }

    /// Holds the store's contents against [`Store::gc`] until dropped.
    pub fn hold(&self) -> Result<StoreHold, StoreError> {
        Ok(StoreHold {
            _lock: self.gc_lock(nix::fcntl::FlockArg::LockShared)?,
        })
    }

    /// Removes every blob and extracted layer that no image in images.json uses, and
    /// leftovers in `tmp/` of interrupted runs. Waits for running imports and bundle
    /// preparations. Fails without removing anything if an image's manifest or config
    /// cannot be read.
    pub fn gc(&self) -> Result<GcStats, StoreError> {
        let _lock = self.gc_lock(nix::fcntl::FlockArg::LockExclusive)?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for (name, rec) in self.images()? {
            let bad = |why: String| StoreError::BadImage {
                name: name.clone(),
                why,
            };
            let manifest: ImageManifest = self.read_json(&rec.manifest, "an image manifest")?;
            let config: ImageConfiguration = self.read_json(&rec.config, "an image config")?;
            blobs.insert(rec.manifest.hex().to_string());
            blobs.insert(rec.config.hex().to_string());
            for l in manifest.layers() {
                let d: Digest = l
                    .digest()
                    .to_string()
                    .parse()
                    .map_err(|e| bad(format!("layer digest: {e}")))?;
                blobs.insert(d.hex().to_string());
            }
            for id in config.rootfs().diff_ids() {
                let d: Digest = id.parse().map_err(|e| bad(format!("diff id: {e}")))?;
                layers.insert(d.hex().to_string());
            }
        }
        let mut stats = GcStats::default();
        let bdir = self.root().join("blobs/sha256");
        for e in read_dir(&bdir)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(e.path()).map_err(|source| StoreError::Io {
                    op: "removing",
                    path: e.path(),
                    source,
                })?;
                stats.blobs_removed += 1;
                stats.bytes_freed += size;
            }
        }
        for dir in ["layers", "tmp"] {
            let p = self.root().join(dir);
            for e in read_dir(&p)? {
                let name = e.file_name().to_string_lossy().into_owned();
                if dir == "tmp" || !layers.contains(&name) {
                    let path = e.path();
                    let res = match e.file_type() {
                        Ok(t) if t.is_dir() => unpack::remove_tree(&path),
                        _ => std::fs::remove_file(&path),
                    };
                    res.map_err(|source| StoreError::Io {
                        op: "removing",
                        path,
                        source,
                    })?;
                    if dir == "layers" {
                        stats.layers_removed += 1;
                    }
                }
            }
        }
        tracing::info!(?stats, "store garbage-collected");
        Ok(stats)
    }
}

fn read_dir(p: &std::path::Path) -> Result<Vec<std::fs::DirEntry>, StoreError> {
    let io = |source| StoreError::Io {
        op: "reading",
        path: p.to_path_buf(),
        source,
    };
    std::fs::read_dir(p)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::import::{import_path, ImportOptions};
    use crate::store::Store;
    use crate::testutil::{blob_count, TarBuilder, TestImage};
    use crate::unpack::UnpackOptions;

    #[test]
    fn gc_keeps_what_images_use_and_removes_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("state"))
            .unwrap()
            .with_unpack_options(UnpackOptions { privileged: false });
        let layout = t.path().join("layout");
        TestImage::new(json!({})).write_layout(&layout, None, false);
        let opts = ImportOptions {
            name: Some("keep:1".into()),
            arch: "amd64".into(),
            ..ImportOptions::default()
        };
        import_path(&s, &layout, &opts).unwrap();
        let img = s.image("keep:1").unwrap();
        s.layers(&img).unwrap();
        // An unreferenced blob, an unreferenced extracted layer, a leftover in tmp/.
        let stray = TarBuilder::default().file("x", b"1").finish();
        let (sd, _) = s.put_blob_unverified(&stray[..]).unwrap();
        s.layer(&crate::Digest::of(&stray), &sd).unwrap();
        std::fs::create_dir_all(s.root().join("tmp/layer-dead/fs/ro")).unwrap();
        let before = blob_count(&s);

        let stats = s.gc().unwrap();
        assert_eq!((stats.blobs_removed, stats.layers_removed), (1, 1));
        assert_eq!(stats.bytes_freed, stray.len() as u64);
        assert_eq!(blob_count(&s), before - 1);
        assert!(std::fs::read_dir(s.root().join("tmp"))
            .unwrap()
            .next()
            .is_none());
        // The image still works, its layers cached.
        assert_eq!(s.layers(&s.image("keep:1").unwrap()).unwrap().len(), 2);

        // Untagged, everything goes.
        s.untag("keep:1").unwrap();
        let stats = s.gc().unwrap();
        assert_eq!(stats.layers_removed, 2);
        assert_eq!(blob_count(&s), 0);
    }

    #[test]
    fn gc_refuses_when_an_image_is_unreadable() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path().join("state")).unwrap();
        let layout = t.path().join("layout");
        TestImage::new(json!({})).write_layout(&layout, Some("localhost/a:1"), false);
        let imported = import_path(
            &s,
            &layout,
            &ImportOptions {
                arch: "amd64".into(),
                ..ImportOptions::default()
            },
        )
        .unwrap();
        let (stray, _) = s.put_blob_unverified(&b"stray"[..]).unwrap();
        s.remove_blob(&imported.record.config).unwrap();
        let err = s.gc().unwrap_err();
        assert!(
            err.to_string()
                .contains(&imported.record.config.to_string()),
            "{err}"
        );
        assert!(s.has_blob(&stray), "nothing removed");
    }
}
