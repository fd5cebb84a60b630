//! Importing images into the store from a local OCI image layout directory, an OCI image
//! tarball, or a `docker save` archive (old `<id>/layer.tar` and new `blobs/sha256/` forms,
//! possibly gzip/zstd-compressed as a whole).
//!
//! Every blob is written through the store's digest check; a blob this import created is
//! removed again if the import fails, so a failed import leaves the store as it was.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::compress::{self, Compression};
use crate::digest::Digest;
use crate::reference::{self, ReferenceError};
use crate::store::{ImageRecord, Store, StoreError, MAX_JSON_BLOB};
use crate::unpack::resolve::{clean_entry_path, join};

/// Errors of importing. Each names the file, archive member or image concerned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0:?} is neither an OCI image layout, an OCI image tarball nor a docker-archive")]
    NotAnImage(PathBuf),
    #[error("{source_path:?}: {what} is missing")]
    Missing { source_path: PathBuf, what: String },
    #[error("{source_path:?}: {what} is not valid: {source}")]
    Json {
        source_path: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{source_path:?}: archive member {member:?}: {source}")]
    Member {
        source_path: PathBuf,
        member: PathBuf,
        #[source]
        source: Box<ImportError>,
    },
    #[error("{source_path:?}: no manifest for {os}/{arch} among {found:?}")]
    NoPlatform {
        source_path: PathBuf,
        os: String,
        arch: String,
        found: Vec<String>,
    },
    #[error("{source_path:?} holds {count} images ({names:?}); name the one to import")]
    Ambiguous {
        source_path: PathBuf,
        count: usize,
        names: Vec<String>,
    },
    #[error("{source_path:?}: {why}")]
    Invalid { source_path: PathBuf, why: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.into();
    move |source| ImportError::Io { op, path, source }
}

/// What to import and for which platform.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Name to give the image (and to pick it when the source holds several).
    pub name: Option<String>,
    /// Platform picked from an image index, `linux/<host arch>` by default.
    pub os: String,
    pub arch: String,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            name: None,
            os: "linux".into(),
            arch: host_arch().into(),
        }
    }
}

/// The OCI architecture name of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An imported image: the record stored and the names it was stored under (normalised;
/// the manifest digest when the source named it nothing).
#[derive(Debug, Clone)]
pub struct Imported {
    pub names: Vec<String>,
    pub record: ImageRecord,
}

/// Imports the image at `path`: a directory is read as an OCI image layout, a file as an
/// OCI or docker-archive tarball.
pub fn import_path(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let _hold = store.hold()?;
    let mut txn = Txn {
        store,
        created: Vec::new(),
    };
    let result = if path.is_dir() {
        import_layout_dir(&mut txn, path, opts)
    } else {
        import_tarball(&mut txn, path, opts)
    };
    if result.is_err() {
        txn.rollback();
    }
    result
}

/// Blobs created by one import, removed if it fails.
struct Txn<'a> {
    store: &'a Store,
    created: Vec<Digest>,
}

impl Txn<'_> {
    fn put(
        &mut self,
        expected: &Digest,
        size: Option<u64>,
        r: impl Read,
    ) -> Result<u64, StoreError> {
        let put = self.store.put_blob(expected, size, r)?;
        if put.created {
            self.created.push(expected.clone());
        }
        Ok(put.size)
    }

    fn put_unverified(&mut self, r: impl Read) -> Result<Digest, StoreError> {
        let (d, put) = self.store.put_blob_unverified(r)?;
        if put.created {
            self.created.push(d.clone());
        }
        Ok(d)
    }

    fn rollback(&mut self) {
        for d in self.created.drain(..) {
            let _ = self.store.remove_blob(&d);
        }
    }
}

/// Where blobs named by digest come from while resolving an index.
enum Blobs<'p> {
    /// `<dir>/blobs/sha256/<hex>` of an OCI layout directory, copied on demand.
    Dir(&'p Path),
    /// Already written to the store while reading a tarball.
    InStore,
}

fn oci_digest(d: &oci_spec::image::Digest, src: &Path) -> Result<Digest, ImportError> {
    d.to_string().parse().map_err(|e| ImportError::Invalid {
        source_path: src.to_path_buf(),
        why: format!("{e}"),
    })
}

impl Blobs<'_> {
    fn ensure(
        &self,
        txn: &mut Txn<'_>,
        src: &Path,
        desc: &Descriptor,
    ) -> Result<Digest, ImportError> {
        let d = oci_digest(desc.digest(), src)?;
        match self {
            Blobs::Dir(dir) => {
                let p = dir.join("blobs/sha256").join(d.hex());
                let f = File::open(&p).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => ImportError::Missing {
                        source_path: src.to_path_buf(),
                        what: format!("blob {d}"),
                    },
                    _ => io_err("opening", &p)(e),
                })?;
                txn.put(&d, Some(desc.size()), f)?;
            }
            Blobs::InStore => {
                if !txn.store.has_blob(&d) {
                    return Err(ImportError::Missing {
                        source_path: src.to_path_buf(),
                        what: format!("blob {d}"),
                    });
                }
            }
        }
        Ok(d)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    src: &Path,
    what: &str,
    data: &[u8],
) -> Result<T, ImportError> {
    serde_json::from_slice(data).map_err(|source| ImportError::Json {
        source_path: src.to_path_buf(),
        what: what.to_string(),
        source,
    })
}

fn import_layout_dir(
    txn: &mut Txn<'_>,
    dir: &Path,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    if !dir.join("oci-layout").is_file() {
        return Err(ImportError::NotAnImage(dir.to_path_buf()));
    }
    let ip = dir.join("index.json");
    let data = read_small(&ip)?;
    let index: ImageIndex = parse_json(dir, "index.json", &data)?;
    import_index(txn, dir, &index, &Blobs::Dir(dir), opts)
}

fn read_small(p: &Path) -> Result<Vec<u8>, ImportError> {
    let f = File::open(p).map_err(io_err("opening", p))?;
    let mut out = Vec::new();
    f.take(MAX_JSON_BLOB + 1)
        .read_to_end(&mut out)
        .map_err(io_err("reading", p))?;
    if out.len() as u64 > MAX_JSON_BLOB {
        return Err(ImportError::Invalid {
            source_path: p.to_path_buf(),
            why: "larger than 16 MiB".into(),
        });
    }
    Ok(out)
}

const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
const ANN_CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The full image name a layout descriptor carries, if any.
fn descriptor_name(desc: &Descriptor) -> Option<String> {
    let ann = desc.annotations().as_ref()?;
    if let Some(n) = ann.get(ANN_CONTAINERD_NAME) {
        return reference::normalize(n).ok();
    }
    // ref.name is often just a tag; only a full reference names the image.
    let r = ann.get(ANN_REF_NAME)?;
    (r.contains('/') || r.contains(':'))
        .then(|| reference::normalize(r).ok())
        .flatten()
}

fn import_index(
    txn: &mut Txn<'_>,
    src: &Path,
    index: &ImageIndex,
    blobs: &Blobs<'_>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let top = index.manifests();
    let wanted = opts.name.as_deref().map(reference::normalize).transpose()?;
    let chosen = match (&wanted, top.len()) {
        (_, 0) => {
            return Err(ImportError::Missing {
                source_path: src.to_path_buf(),
                what: "a manifest in index.json".into(),
            })
        }
        (Some(w), _) if top.iter().any(|d| descriptor_name(d).as_ref() == Some(w)) => top
            .iter()
            .find(|d| descriptor_name(d).as_ref() == Some(w))
            .expect("checked"),
        (_, 1) => &top[0],
        _ if top.iter().all(|d| d.platform().is_some()) => pick_platform(src, top, opts)?,
        (_, n) => {
            let names = top
                .iter()
                .map(|d| descriptor_name(d).unwrap_or_else(|| d.digest().to_string()))
                .collect();
            return Err(ImportError::Ambiguous {
                source_path: src.to_path_buf(),
                count: n,
                names,
            });
        }
    };
    let mut names: Vec<String> = wanted.into_iter().collect();
    if let Some(n) = descriptor_name(chosen) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let manifest_desc = resolve_to_manifest(txn, src, chosen, blobs, opts, 0)?;
    import_manifest(txn, src, &manifest_desc, blobs, names)
}

fn pick_platform<'d>(
    src: &Path,
    descs: &'d [Descriptor],
    opts: &ImportOptions,
) -> Result<&'d Descriptor, ImportError> {
    descs
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == opts.os && p.architecture().to_string() == opts.arch
            })
        })
        .ok_or_else(|| ImportError::NoPlatform {
            source_path: src.to_path_buf(),
            os: opts.os.clone(),
            arch: opts.arch.clone(),
            found: descs
                .iter()
                .filter_map(|d| {
                    d.platform()
                        .as_ref()
                        .map(|p| format!("{}/{}", p.os(), p.architecture()))
                })
                .collect(),
        })
}

/// Follows nested indexes down to the image manifest for the wanted platform.
fn resolve_to_manifest(
    txn: &mut Txn<'_>,
    src: &Path,
    desc: &Descriptor,
    blobs: &Blobs<'_>,
    opts: &ImportOptions,
    depth: usize,
) -> Result<Descriptor, ImportError> {
    let mt = desc.media_type().to_string();
    if *desc.media_type() != MediaType::ImageIndex && mt != DOCKER_MANIFEST_LIST {
        return Ok(desc.clone());
    }
    if depth > 4 {
        return Err(ImportError::Invalid {
            source_path: src.to_path_buf(),
            why: "image indexes nested too deep".into(),
        });
    }
    let d = blobs.ensure(txn, src, desc)?;
    let index: ImageIndex =
        parse_json(src, &format!("image index {d}"), &txn.store.read_blob(&d)?)?;
    let next = pick_platform(src, index.manifests(), opts)?;
    resolve_to_manifest(txn, src, next, blobs, opts, depth + 1)
}

fn import_manifest(
    txn: &mut Txn<'_>,
    src: &Path,
    desc: &Descriptor,
    blobs: &Blobs<'_>,
    names: Vec<String>,
) -> Result<Imported, ImportError> {
    let md = blobs.ensure(txn, src, desc)?;
    let manifest: ImageManifest = parse_json(
        src,
        &format!("image manifest {md}"),
        &txn.store.read_blob(&md)?,
    )?;
    let cd = blobs.ensure(txn, src, manifest.config())?;
    let config: ImageConfiguration = parse_json(
        src,
        &format!("image config {cd}"),
        &txn.store.read_blob(&cd)?,
    )?;
    let mut size = manifest.config().size();
    for layer in manifest.layers() {
        blobs.ensure(txn, src, layer)?;
        size += layer.size();
    }
    check_layers(src, &manifest, &config)?;
    let record = ImageRecord {
        manifest: md,
        config: cd,
        size,
        created: config.created().clone(),
    };
    finish(txn, names, record)
}

fn check_layers(
    src: &Path,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<(), ImportError> {
    let (l, d) = (manifest.layers().len(), config.rootfs().diff_ids().len());
    if l != d {
        return Err(ImportError::Invalid {
            source_path: src.to_path_buf(),
            why: format!("the manifest lists {l} layers but the config {d} diff ids"),
        });
    }
    for id in config.rootfs().diff_ids() {
        id.parse::<Digest>().map_err(|e| ImportError::Invalid {
            source_path: src.to_path_buf(),
            why: format!("diff id: {e}"),
        })?;
    }
    Ok(())
}

fn finish(
    txn: &mut Txn<'_>,
    mut names: Vec<String>,
    record: ImageRecord,
) -> Result<Imported, ImportError> {
    if names.is_empty() {
        names.push(record.manifest.to_string());
    }
    for n in &names {
        txn.store.tag(n, &record)?;
    }
    Ok(Imported { names, record })
}

/// A regular-file member of a tarball: kept in memory (small top-level JSON) or stored.
#[derive(Debug)]
enum Member {
    Stored(Digest),
    Link(PathBuf),
}

fn import_tarball(
    txn: &mut Txn<'_>,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let f = File::open(path).map_err(io_err("opening", path))?;
    let (_, stream) = compress::decompress(f).map_err(io_err("reading", path))?;
    let mut archive = tar::Archive::new(stream);
    let mut small: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut members: BTreeMap<PathBuf, Member> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|_| ImportError::NotAnImage(path.to_path_buf()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| match members.is_empty() && small.is_empty() {
            true => ImportError::NotAnImage(path.to_path_buf()),
            false => io_err("reading", path)(e),
        })?;
        let raw = entry.path().map_err(io_err("reading", path))?.into_owned();
        let member_err = |source: ImportError| ImportError::Member {
            source_path: path.to_path_buf(),
            member: raw.clone(),
            source: Box::new(source),
        };
        let comps = clean_entry_path(&raw).map_err(|e| {
            member_err(ImportError::Invalid {
                source_path: path.to_path_buf(),
                why: e.to_string(),
            })
        })?;
        let rel = join(&comps);
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // docker save shares identical layers as `<id>/layer.tar -> ../<other>/layer.tar`.
            if let Some(target) = entry.link_name().map_err(io_err("reading", path))? {
                let base = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                if let Ok(t) = clean_entry_path(&base.join(target)) {
                    members.insert(rel, Member::Link(join(&t)));
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let top_json = comps.len() == 1
            && matches!(
                rel.to_str(),
                Some("manifest.json" | "index.json" | "oci-layout")
            );
        if top_json {
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_JSON_BLOB + 1)
                .read_to_end(&mut data)
                .map_err(io_err("reading", path))?;
            small.insert(rel, data);
        } else if comps.len() == 3 && comps[0] == "blobs" && comps[1] == "sha256" {
            let d = Digest::from_hex(&comps[2].to_string_lossy()).map_err(|e| {
                member_err(ImportError::Invalid {
                    source_path: path.to_path_buf(),
                    why: e.to_string(),
                })
            })?;
            txn.put(&d, Some(entry.size()), &mut entry)
                .map_err(|e| member_err(e.into()))?;
            members.insert(rel, Member::Stored(d));
        } else if rel.extension().is_some_and(|e| e == "json")
            || rel.file_name().is_some_and(|n| n == "layer.tar")
        {
            let d = txn
                .put_unverified(&mut entry)
                .map_err(|e| member_err(e.into()))?;
            members.insert(rel, Member::Stored(d));
        }
    }
    let docker = small.get(Path::new("manifest.json"));
    let index = match (
        small.get(Path::new("index.json")),
        small.contains_key(Path::new("oci-layout")),
    ) {
        (Some(idx), true) => Some(parse_json::<ImageIndex>(path, "index.json", idx)?),
        _ => None,
    };
    match (index, docker) {
        // docker 25+ writes both: the OCI index keeps the image's own manifest digest, and
        // manifest.json adds the RepoTags of the image with the same config.
        (Some(index), docker) if !index.manifests().is_empty() => {
            let mut imported = import_index(txn, path, &index, &Blobs::InStore, opts)?;
            if let Some(m) = docker {
                let entries: Vec<DockerManifest> = parse_json(path, "manifest.json", m)?;
                for e in &entries {
                    if member_digest(path, &members, &e.config).ok().as_ref()
                        != Some(&imported.record.config)
                    {
                        continue;
                    }
                    for t in docker_tags(e) {
                        if !imported.names.contains(&t) {
                            txn.store.tag(&t, &imported.record)?;
                            imported.names.push(t);
                        }
                    }
                }
                drop_digest_name(txn, &mut imported)?;
            }
            Ok(imported)
        }
        (_, Some(m)) => import_docker(txn, path, m, &members, opts),
        _ => Err(ImportError::NotAnImage(path.to_path_buf())),
    }
}

/// An image first stored under its digest (unnamed in the index) loses that key once it
/// has names.
fn drop_digest_name(txn: &mut Txn<'_>, imported: &mut Imported) -> Result<(), ImportError> {
    let key = imported.record.manifest.to_string();
    if imported.names.len() > 1 && imported.names[0] == key {
        txn.store.untag(&key)?;
        imported.names.remove(0);
    }
    Ok(())
}

fn docker_tags(e: &DockerManifest) -> Vec<String> {
    e.repo_tags
        .iter()
        .flatten()
        .filter_map(|t| reference::normalize(t).ok())
        .collect()
}

/// One image of a docker-archive `manifest.json`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn member_digest(
    src: &Path,
    members: &BTreeMap<PathBuf, Member>,
    name: &str,
) -> Result<Digest, ImportError> {
    let mut p = join(
        &clean_entry_path(Path::new(name)).map_err(|e| ImportError::Invalid {
            source_path: src.to_path_buf(),
            why: e.to_string(),
        })?,
    );
    for _ in 0..16 {
        match members.get(&p) {
            Some(Member::Stored(d)) => return Ok(d.clone()),
            Some(Member::Link(t)) => p = t.clone(),
            None => break,
        }
    }
    Err(ImportError::Missing {
        source_path: src.to_path_buf(),
        what: format!("archive member {name:?}"),
    })
}

fn import_docker(
    txn: &mut Txn<'_>,
    src: &Path,
    manifest_json: &[u8],
    members: &BTreeMap<PathBuf, Member>,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let entries: Vec<DockerManifest> = parse_json(src, "manifest.json", manifest_json)?;
    let tags = docker_tags;
    let wanted = opts.name.as_deref().map(reference::normalize).transpose()?;
    let entry = match (&wanted, entries.len()) {
        (_, 0) => {
            return Err(ImportError::Missing {
                source_path: src.to_path_buf(),
                what: "an image in manifest.json".into(),
            })
        }
        (Some(w), _) if entries.iter().any(|e| tags(e).contains(w)) => entries
            .iter()
            .find(|e| tags(e).contains(w))
            .expect("checked"),
        (_, 1) => &entries[0],
        (_, n) => {
            let names = entries.iter().flat_map(tags).collect();
            return Err(ImportError::Ambiguous {
                source_path: src.to_path_buf(),
                count: n,
                names,
            });
        }
    };
    let cd = member_digest(src, members, &entry.config)?;
    let config_bytes = txn.store.read_blob(&cd)?;
    let config: ImageConfiguration = parse_json(
        src,
        &format!("image config {}", entry.config),
        &config_bytes,
    )?;
    let mut layers = Vec::new();
    for l in &entry.layers {
        let d = member_digest(src, members, l)?;
        let bp = txn.store.blob_path(&d);
        let kind = compress::detect_file(&bp).map_err(io_err("reading", &bp))?;
        let size = std::fs::metadata(&bp)
            .map_err(io_err("reading", &bp))?
            .len();
        layers.push(descriptor(layer_media_type(kind), size, &d));
    }
    let config_desc = descriptor(MediaType::ImageConfig, config_bytes.len() as u64, &cd);
    let size = config_desc.size() + layers.iter().map(|l| l.size()).sum::<u64>();
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers)
        .build()
        .map_err(|e| ImportError::Invalid {
            source_path: src.to_path_buf(),
            why: format!("building a manifest: {e}"),
        })?;
    check_layers(src, &manifest, &config)?;
    let bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
    let md = txn.put_unverified(&bytes[..])?;
    let mut names: Vec<String> = wanted.into_iter().collect();
    for t in tags(entry) {
        if !names.contains(&t) {
            names.push(t);
        }
    }
    let record = ImageRecord {
        manifest: md,
        config: cd,
        size,
        created: config.created().clone(),
    };
    finish(txn, names, record)
}

fn layer_media_type(kind: Compression) -> MediaType {
    match kind {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    }
}

fn descriptor(mt: MediaType, size: u64, d: &Digest) -> Descriptor {
    let od: oci_spec::image::Digest = d
        .to_string()
        .parse()
        .expect("a sha256 digest is a valid OCI digest");
    Descriptor::new(mt, size, od)
}
