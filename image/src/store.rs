//! The content-addressed image store under a state directory:
//!
//! ```text
//! <root>/blobs/sha256/<hex>        every blob (manifests, configs, layers), digest-checked
//! <root>/layers/<diffid hex>/fs    a layer extracted on its own, once
//! <root>/layers/<diffid hex>/changes.json   its whiteouts, opaque dirs, implicit dirs
//! <root>/images.json               name -> manifest digest, config digest, size, created
//! <root>/tmp/                      work areas, renamed into place when complete
//! <root>/lock                      flock held while images.json is rewritten
//! ```
//!
//! A blob is written to `tmp/` while it is hashed and renamed into `blobs/` only when its
//! digest matches, so a corrupt download or archive member never enters the store. A
//! registry pull writes through [`Store::put_blob`] the same way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::compress;
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::reference;
use crate::unpack::{self, LayerChanges, UnpackError, UnpackOptions};

/// Largest JSON blob (manifest, index, config) read into memory.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// Errors of the store. Each names the blob, layer, image or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {expected}: content has digest {actual}; rejected, not stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: expected {expected} bytes, got {actual}; rejected, not stored")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("layer {diff_id} (blob {blob}): uncompressed content has digest {actual}; rejected, not cached")]
    DiffIdMismatch {
        diff_id: Digest,
        blob: Digest,
        actual: Digest,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("blob {digest} is larger than {MAX_JSON_BLOB} bytes; not read as JSON")]
    TooLarge { digest: Digest },
    #[error("no image {0:?} in the store")]
    NoImage(String),
    #[error("image {name:?}: {why}")]
    BadImage { name: String, why: String },
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error("blob {digest}: not valid JSON for {what}: {source}")]
    Json {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unpacking layer {diff_id}: {source}")]
    Unpack {
        diff_id: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}

/// One entry of `images.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub manifest: Digest,
    pub config: Digest,
    /// Config plus layer blobs, in bytes as stored (compressed).
    pub size: u64,
    /// The image config's `created`, when it has one.
    pub created: Option<String>,
}

/// An image loaded from the store.
#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was looked up by (normalised), or its manifest digest.
    pub name: String,
    pub record: ImageRecord,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// A layer extracted in the store.
#[derive(Debug, Clone)]
pub struct Layer {
    pub diff_id: Digest,
    /// The extracted tree.
    pub root: PathBuf,
    pub changes: LayerChanges,
}

/// The result of writing a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutBlob {
    pub size: u64,
    /// False when the store already had it.
    pub created: bool,
}

/// The image store. Cheap to open; several processes may use one root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    opts: UnpackOptions,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["blobs/sha256", "layers", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        // Extracted layers hold whatever the images ship, set-uid-root binaries and device
        // nodes included: no other host user may reach them.
        for sub in ["layers", "tmp"] {
            let p = root.join(sub);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("restricting", &p))?;
        }
        Ok(Self {
            root,
            opts: UnpackOptions::default(),
        })
    }

    /// Overrides the unpack options (by default: privileged when running as root).
    pub fn with_unpack_options(mut self, opts: UnpackOptions) -> Self {
        self.opts = opts;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn unpack_options(&self) -> UnpackOptions {
        self.opts
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A fresh, unique path under `tmp/` (not created).
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Writes a blob read from `reader`, checking it hashes to `expected` (and has
    /// `expected_size` bytes, when given). On a mismatch nothing is stored.
    pub fn put_blob(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        reader: impl Read,
    ) -> Result<PutBlob, StoreError> {
        if self.has_blob(expected) {
            // Still consume nothing: the content is known.
            let size = std::fs::metadata(self.blob_path(expected))
                .map(|m| m.len())
                .unwrap_or(0);
            return Ok(PutBlob {
                size,
                created: false,
            });
        }
        let (tmp, actual, size) = self.write_tmp(reader)?;
        let check = if &actual != expected {
            Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            })
        } else if expected_size.is_some_and(|s| s != size) {
            Err(StoreError::SizeMismatch {
                digest: expected.clone(),
                expected: expected_size.unwrap_or(0),
                actual: size,
            })
        } else {
            Ok(())
        };
        if let Err(e) = check {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.commit_tmp(&tmp, expected)?;
        Ok(PutBlob {
            size,
            created: true,
        })
    }

    /// Writes a blob whose digest is not known beforehand (a `docker save` layer.tar, a
    /// manifest we synthesise) and returns its digest.
    pub fn put_blob_unverified(&self, reader: impl Read) -> Result<(Digest, PutBlob), StoreError> {
        let (tmp, digest, size) = self.write_tmp(reader)?;
        if self.has_blob(&digest) {
            let _ = std::fs::remove_file(&tmp);
            return Ok((
                digest,
                PutBlob {
                    size,
                    created: false,
                },
            ));
        }
        self.commit_tmp(&tmp, &digest)?;
        Ok((
            digest,
            PutBlob {
                size,
                created: true,
            },
        ))
    }

    /// Starts writing a blob pushed in pieces (a registry download): the bytes go to
    /// `tmp/` while hashed, and [`BlobWriter::commit`] renames them into `blobs/` only if
    /// they hash to `expected` and, when given, number `expected_size` (more bytes than
    /// that are refused as they arrive). A writer dropped uncommitted removes its file.
    /// `None` when the store already has the blob.
    pub fn blob_writer(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Option<BlobWriter>, StoreError> {
        if self.has_blob(expected) {
            return Ok(None);
        }
        let tmp = self.tmp_path("blob");
        let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        Ok(Some(BlobWriter {
            store: self.clone(),
            expected: expected.clone(),
            expected_size,
            inner: Some(HashingWriter::new(io::BufWriter::new(file))),
            written: 0,
            tmp,
        }))
    }

    fn write_tmp(&self, mut reader: impl Read) -> Result<(PathBuf, Digest, u64), StoreError> {
        let tmp = self.tmp_path("blob");
        let file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let mut w = HashingWriter::new(io::BufWriter::new(file));
        let copied = io::copy(&mut reader, &mut w).and_then(|_| w.flush());
        let (digest, size, buf) = w.finish();
        let synced = copied
            .and_then(|_| buf.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("writing", &tmp)(e));
        }
        Ok((tmp, digest, size))
    }

    fn commit_tmp(&self, tmp: &Path, digest: &Digest) -> Result<(), StoreError> {
        let dst = self.blob_path(digest);
        std::fs::rename(tmp, &dst).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            io_err("storing", &dst)(e)
        })
    }

    /// Removes a blob (used to undo a failed import). Missing is fine.
    pub fn remove_blob(&self, d: &Digest) -> Result<(), StoreError> {
        let p = self.blob_path(d);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &p)(e)),
            _ => Ok(()),
        }
    }

    /// Reads a small blob (JSON) into memory.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let f = File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(d.clone()),
            _ => io_err("opening", &p)(e),
        })?;
        let mut out = Vec::new();
        f.take(MAX_JSON_BLOB + 1)
            .read_to_end(&mut out)
            .map_err(io_err("reading", &p))?;
        if out.len() as u64 > MAX_JSON_BLOB {
            return Err(StoreError::TooLarge { digest: d.clone() });
        }
        Ok(out)
    }

    /// Parses a JSON blob.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        d: &Digest,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let data = self.read_blob(d)?;
        serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            digest: d.clone(),
            what,
            source,
        })
    }

    /// The layer with `diff_id`, extracting blob `blob` the first time. The extraction
    /// goes to a temporary directory renamed into `layers/` once complete, and only if the
    /// uncompressed stream hashes to `diff_id`.
    pub fn layer(&self, diff_id: &Digest, blob: &Digest) -> Result<Layer, StoreError> {
        let dir = self.root.join("layers").join(diff_id.hex());
        if let Some(layer) = self.load_layer(diff_id, &dir)? {
            return Ok(layer);
        }
        let tmp = self.tmp_path("layer");
        let result = self.extract_into(diff_id, blob, &tmp);
        let result = result.and_then(|()| match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(()),
            // Another process finished the same layer first: use theirs.
            Err(_) if dir.join("changes.json").is_file() => Ok(()),
            Err(e) => Err(io_err("storing layer", &dir)(e)),
        });
        if tmp.exists() {
            let _ = unpack::remove_tree(&tmp);
        }
        result?;
        self.load_layer(diff_id, &dir)?
            .ok_or_else(|| io_err("loading layer", &dir)(io::ErrorKind::NotFound.into()))
    }

    fn load_layer(&self, diff_id: &Digest, dir: &Path) -> Result<Option<Layer>, StoreError> {
        let cj = dir.join("changes.json");
        let data = match std::fs::read(&cj) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &cj)(e)),
        };
        let changes = serde_json::from_slice(&data)
            .map_err(|e| io_err("parsing", &cj)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        Ok(Some(Layer {
            diff_id: diff_id.clone(),
            root: dir.join("fs"),
            changes,
        }))
    }

    fn extract_into(&self, diff_id: &Digest, blob: &Digest, tmp: &Path) -> Result<(), StoreError> {
        let fs_dir = tmp.join("fs");
        std::fs::create_dir_all(&fs_dir).map_err(io_err("creating", &fs_dir))?;
        let bp = self.blob_path(blob);
        let f = File::open(&bp).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(blob.clone()),
            _ => io_err("opening", &bp)(e),
        })?;
        let (kind, stream) = compress::decompress(f).map_err(io_err("reading", &bp))?;
        tracing::info!(%diff_id, %blob, compression = ?kind, "extracting layer");
        let mut hashing = HashingReader::new(stream);
        let changes =
            unpack::extract_layer(&mut hashing, &fs_dir, self.opts).map_err(|source| {
                StoreError::Unpack {
                    diff_id: diff_id.clone(),
                    source,
                }
            })?;
        let (actual, _) = hashing.finish().map_err(io_err("reading", &bp))?;
        if &actual != diff_id {
            return Err(StoreError::DiffIdMismatch {
                diff_id: diff_id.clone(),
                blob: blob.clone(),
                actual,
            });
        }
        let cj = tmp.join("changes.json");
        let json = serde_json::to_vec_pretty(&changes).expect("LayerChanges serialises");
        std::fs::write(&cj, json).map_err(io_err("writing", &cj))?;
        // One syncfs before the rename: a crash must not leave a renamed but empty layer.
        let dir = File::open(tmp).map_err(io_err("opening", tmp))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .map_err(|e| io_err("syncing", tmp)(e.into()))
    }

    /// All named images.
    pub fn images(&self) -> Result<BTreeMap<String, ImageRecord>, StoreError> {
        let p = self.root.join("images.json");
        match std::fs::read(&p) {
            Ok(d) => serde_json::from_slice(&d)
                .map_err(|e| io_err("parsing", &p)(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_err("reading", &p)(e)),
        }
    }

    /// Records `name` (normalised; or a manifest digest for an unnamed image) for `rec`,
    /// replacing what the name pointed to.
    pub fn tag(&self, name: &str, rec: &ImageRecord) -> Result<String, StoreError> {
        let key = self.key(name)?;
        self.update_index(|idx| {
            idx.insert(key.clone(), rec.clone());
        })?;
        Ok(key)
    }

    /// Forgets a name; returns what it pointed to. Blobs and layers stay (a later `gc`
    /// may remove what no image uses).
    pub fn untag(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let key = self.key(name)?;
        let mut removed = None;
        self.update_index(|idx| removed = idx.remove(&key))?;
        removed.ok_or(StoreError::NoImage(key))
    }

    fn key(&self, name: &str) -> Result<String, StoreError> {
        if let Ok(d) = name.parse::<Digest>() {
            return Ok(d.to_string());
        }
        Ok(reference::normalize(name)?)
    }

    fn update_index(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ImageRecord>),
    ) -> Result<(), StoreError> {
        let lock_path = self.root.join("lock");
        let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("locking", &lock_path)(e.into()))?;
        let mut idx = self.images()?;
        f(&mut idx);
        let p = self.root.join("images.json");
        let tmp = self.tmp_path("images.json");
        let json = serde_json::to_vec_pretty(&idx).expect("index serialises");
        std::fs::write(&tmp, json).map_err(io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("replacing", &p))
    }

    /// Looks an image up by name (normalised) or manifest digest and loads its manifest
    /// and config.
    pub fn image(&self, name: &str) -> Result<Image, StoreError> {
        let key = self.key(name)?;
        let idx = self.images()?;
        let record = match idx.get(&key) {
            Some(r) => r.clone(),
            None => idx
                .values()
                .find(|r| r.manifest.to_string() == key)
                .cloned()
                .ok_or_else(|| StoreError::NoImage(name.to_string()))?,
        };
        let manifest: ImageManifest = self.read_json(&record.manifest, "an image manifest")?;
        let config: ImageConfiguration = self.read_json(&record.config, "an image config")?;
        let layers = manifest.layers().len();
        let diff_ids = config.rootfs().diff_ids().len();
        if layers != diff_ids {
            return Err(StoreError::BadImage {
                name: key,
                why: format!("manifest lists {layers} layers but the config {diff_ids} diff ids"),
            });
        }
        Ok(Image {
            name: key,
            record,
            manifest,
            config,
        })
    }

    /// The extracted layers of `image`, bottom first (extracting those not cached yet).
    pub fn layers(&self, image: &Image) -> Result<Vec<Layer>, StoreError> {
        let mut out = Vec::new();
        for (desc, diff_id) in image
            .manifest
            .layers()
            .iter()
            .zip(image.config.rootfs().diff_ids())
        {
            let bad = |why: String| StoreError::BadImage {
                name: image.name.clone(),
                why,
            };
            let blob: Digest = desc
                .digest()
                .to_string()
                .parse()
                .map_err(|e| bad(format!("layer digest: {e}")))?;
            let diff: Digest = diff_id.parse().map_err(|e| bad(format!("diff id: {e}")))?;
            out.push(self.layer(&diff, &blob)?);
        }
        Ok(out)
    }
}

/// A blob being written piece by piece; see [`Store::blob_writer`].
pub struct BlobWriter {
    store: Store,
    expected: Digest,
    expected_size: Option<u64>,
    inner: Option<HashingWriter<io::BufWriter<File>>>,
    written: u64,
    tmp: PathBuf,
}

impl BlobWriter {
    /// The digest the content must have.
    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    /// Appends `data`. Refuses (and discards the blob) when this goes past the expected size.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let w = self.inner.as_mut().expect("not committed");
        let total = self.written + data.len() as u64;
        if let Some(limit) = self.expected_size.filter(|&l| total > l) {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.clone(),
                expected: limit,
                actual: total,
            });
        }
        w.write_all(data).map_err(io_err("writing", &self.tmp))?;
        self.written = total;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks digest and size and moves the blob into the store. On a mismatch the blob
    /// is discarded and nothing is stored.
    pub fn commit(mut self) -> Result<PutBlob, StoreError> {
        let mut w = self.inner.take().expect("not committed");
        let flushed = w.flush();
        let (actual, size, buf) = w.finish();
        let synced = flushed
            .and_then(|_| buf.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(io_err("writing", &self.tmp)(e));
        }
        let check = if actual != self.expected {
            Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            })
        } else if self.expected_size.is_some_and(|s| s != size) {
            Err(StoreError::SizeMismatch {
                digest: self.expected.clone(),
                expected: self.expected_size.unwrap_or(0),
                actual: size,
            })
        } else {
            Ok(())
        };
        if let Err(e) = check {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        if self.store.has_blob(&self.expected) {
            // Another pull stored it meanwhile.
            let _ = std::fs::remove_file(&self.tmp);
            return Ok(PutBlob {
                size,
                created: false,
            });
        }
        self.store.commit_tmp(&self.tmp, &self.expected)?;
        Ok(PutBlob {
            size,
            created: true,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
