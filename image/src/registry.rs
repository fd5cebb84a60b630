//! Pulling images from an OCI distribution registry (the Docker registry v2 API) into the
//! store, with the `oci-client` crate for HTTP, the anonymous bearer-token flow and
//! manifest requests.
//!
//! Every blob goes through the store's checked writer ([`Store::blob_writer`]): streamed
//! to `tmp/` while hashed, renamed into `blobs/` only if digest and size match. Blobs the
//! store has are not downloaded again. The blobs a pull created are removed again if it
//! fails or is dropped (Ctrl-C), and its layers are extracted before the image gets its
//! name, so a failed pull leaves no image, and the name keeps what it had before.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::reference::{Reference, ReferenceError};
use crate::store::{Image, ImageRecord, Store, StoreError, MAX_JSON_BLOB};

mod manifest;
pub use manifest::*;

/// What the manifest request accepts. Schema 1 is listed so that a registry holding only
/// that answers with it and we can say why it is refused, rather than a bare 404.
const ACCEPT: [&str; 6] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
];

/// Layers downloaded at once (as docker does).
const PARALLEL_DOWNLOADS: usize = 3;

/// Nested indexes followed at most.
const MAX_INDEX_DEPTH: usize = 4;

/// Errors of pulling. Each names the image reference, registry or blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("platform {0:?} is not of the form OS/ARCH[/VARIANT] (e.g. linux/amd64)")]
    BadPlatform(String),
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry}: TLS handshake failed ({detail}); if it serves plain HTTP, pull with --insecure")]
    Tls { registry: String, detail: String },
    #[error("{reference} not found in {registry}")]
    NotFound { reference: String, registry: String },
    #[error("registry {registry} refused anonymous access to {repository} (HTTP 401); hyperctl pull has no credentials support")]
    Unauthorized {
        registry: String,
        repository: String,
    },
    #[error("{reference}: Docker image manifest schema 1 is not supported (deprecated); push the image again with a current docker or skopeo")]
    Schema1 { reference: String },
    #[error("{reference}: manifest {digest} has media type {media_type:?}, not an image manifest or index")]
    UnsupportedManifest {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    #[error("{reference} is not a container image: {why}")]
    NotAnImage { reference: String, why: String },
    #[error("{reference}: no manifest for {platform} in the image index (it has {found:?})")]
    NoPlatform {
        reference: String,
        platform: Platform,
        found: Vec<String>,
    },
    #[error(
        "{reference}: the registry sent a manifest with digest {actual}, not {expected}; rejected"
    )]
    ManifestDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: the manifest has digest {actual}, not {announced} as the registry announced; rejected (a signed Docker schema 1 manifest looks like this: schema 1 is not supported)")]
    AnnouncedDigest {
        reference: String,
        announced: Digest,
        actual: Digest,
    },
    #[error("{reference}: manifest {digest} is not valid: {why}")]
    BadManifest {
        reference: String,
        digest: Digest,
        why: String,
    },
    #[error("pulling blob {digest} from {registry}: {detail}")]
    Download {
        registry: String,
        digest: Digest,
        detail: String,
    },
    #[error("{reference}: {source}")]
    Extract {
        reference: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        Self::Store(Box::new(e))
    }
}

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Plain HTTP instead of HTTPS for the image's registry.
    pub insecure: bool,
    pub platform: Platform,
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The normalised name it is stored under.
    pub name: String,
    /// The digest the registry knows the reference by (an index's, for a multi-platform
    /// image): `NAME@<digest>` pulls the same again.
    pub digest: Digest,
    pub record: ImageRecord,
}

/// What a pull reports about each layer, for a progress display. Up to three layers
/// download at once, so the calls for different layers interleave.
pub trait Progress {
    /// The layers of the image, before any is fetched.
    fn layers(&mut self, _layers: &[(Digest, u64)]) {}
    /// The store already has this layer.
    fn exists(&mut self, digest: &Digest, size: u64);
    /// Starting the download of `size` bytes.
    fn start(&mut self, digest: &Digest, size: u64);
    /// `done` bytes of it are stored so far.
    fn advance(&mut self, digest: &Digest, done: u64);
    /// Downloaded and verified.
    fn done(&mut self, digest: &Digest);
}

/// Our digest type from an OCI descriptor's (sha256 only).
fn desc_digest(reference: &str, d: &Descriptor) -> Result<Digest, RegistryError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e| RegistryError::NotAnImage {
            reference: reference.to_string(),
            why: format!("{e}"),
        })
}

/// The registry's text for an error, with its causes ("error sending request: ...: dns error").
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = c.source();
    }
    out
}

/// Whether a transport error is a failed TLS handshake (such as a TLS client talking to a
/// plain-HTTP server, which answers with bytes that are no TLS record).
pub(crate) fn is_tls_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "tls",
        "certificate",
        "corrupt message",
        "handshake",
        "invalidcontenttype",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// Where in the pull an error happened, to name it.
pub(crate) struct Ctx<'a> {
    pub(crate) registry: &'a str,
    pub(crate) repository: &'a str,
    pub(crate) reference: &'a str,
}

/// Turns an oci-client error into ours, naming the input.
pub(crate) fn classify(e: OciDistributionError, ctx: &Ctx<'_>) -> RegistryError {
    let registry = ctx.registry.to_string();
    let not_found = || RegistryError::NotFound {
        reference: ctx.reference.to_string(),
        registry: registry.clone(),
    };
    let unauthorized = || RegistryError::Unauthorized {
        registry: registry.clone(),
        repository: ctx.repository.to_string(),
    };
    match e {
        OciDistributionError::RequestError(re) => {
            let detail = chain_text(&re);
            if is_tls_failure(&detail) {
                RegistryError::Tls { registry, detail }
            } else if re.is_connect() || re.is_timeout() {
                RegistryError::Unreachable { registry, detail }
            } else {
                RegistryError::Registry { registry, detail }
            }
        }
        OciDistributionError::UnauthorizedError { .. } => unauthorized(),
        OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let unknown = envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            });
            let denied = envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            if unknown {
                not_found()
            } else if denied {
                unauthorized()
            } else {
                RegistryError::Registry {
                    registry,
                    detail: envelope.to_string(),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        other => RegistryError::Registry {
            registry,
            detail: chain_text(&other),
        },
    }
}

/// Blobs a pull created, removed when it is dropped before [`Created::keep`].
struct Created<'s> {
    store: &'s Store,
    blobs: Vec<Digest>,
    keep: bool,
}

impl Created<'_> {
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for d in &self.blobs {
            if let Err(e) = self.store.remove_blob(d) {
                tracing::warn!(error = %e, "removing a blob of a failed pull");
            }
        }
    }
}

/// The pull of one reference.
struct Puller<'a> {
    client: Client,
    oref: oci_client::Reference,
    ctx: Ctx<'a>,
    store: &'a Store,
}

/// Pulls `name` from its registry into `store` and names it there, as `load` does for an
/// archive. Anonymous access only (with the registry's bearer-token flow).
pub async fn pull(
    store: &Store,
    name: &str,
    opts: &PullOptions,
    progress: &mut dyn Progress,
) -> Result<Pulled, RegistryError> {
    let reference: Reference = name.parse()?;
    let key = reference.to_string();
    let _hold = store.hold()?;
    let oref = match (&reference.tag, &reference.digest) {
        (Some(t), Some(d)) => oci_client::Reference::with_tag_and_digest(
            reference.registry.clone(),
            reference.repository.clone(),
            t.clone(),
            d.to_string(),
        ),
        (_, Some(d)) => oci_client::Reference::with_digest(
            reference.registry.clone(),
            reference.repository.clone(),
            d.to_string(),
        ),
        (t, None) => oci_client::Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            t.clone()
                .unwrap_or_else(|| crate::reference::DEFAULT_TAG.into()),
        ),
    };
    // Declared first, dropped last: in-flight downloads are gone before it rolls back.
    let mut created = Created {
        store,
        blobs: Vec::new(),
        keep: false,
    };
    let p = Puller {
        client: client(opts, oref.resolve_registry())?,
        oref,
        ctx: Ctx {
            registry: &reference.registry,
            repository: &reference.repository,
            reference: &key,
        },
        store,
    };
    let (top_digest, fetched) = p
        .manifest(None, reference.digest.as_ref(), &mut created)
        .await?;
    let (manifest_digest, manifest) = p
        .resolve(top_digest.clone(), fetched, opts, &mut created)
        .await?;
    check_image_manifest(&key, &manifest)?;

    let config_digest = desc_digest(&key, manifest.config())?;
    if p.blob(&config_digest, manifest.config().size(), None)
        .await?
    {
        created.blobs.push(config_digest.clone());
    }
    let config: ImageConfiguration = store.read_json(&config_digest, "an image config")?;
    let (nl, nd) = (manifest.layers().len(), config.rootfs().diff_ids().len());
    if nl != nd {
        return Err(RegistryError::NotAnImage {
            reference: key.clone(),
            why: format!("the manifest lists {nl} layers but the config {nd} diff ids"),
        });
    }
    let mut layers = Vec::new();
    for l in manifest.layers() {
        layers.push((desc_digest(&key, l)?, l.size()));
    }
    progress.layers(&layers);
    let progress = RefCell::new(progress);
    let mut downloads = futures_util::stream::iter(layers.iter().map(|(d, size)| {
        let (p, progress) = (&p, &progress);
        async move { p.blob(d, *size, Some(progress)).await.map(|c| (d, c)) }
    }))
    .buffer_unordered(PARALLEL_DOWNLOADS);
    while let Some(done) = downloads.next().await {
        // On an error, returning drops the other downloads (and their partial files).
        let (d, was_created) = done?;
        if was_created {
            created.blobs.push(d.clone());
        }
    }
    drop(downloads);
    let record = ImageRecord {
        manifest: manifest_digest,
        config: config_digest,
        size: manifest.config().size() + layers.iter().map(|(_, s)| s).sum::<u64>(),
        created: config.created().clone(),
    };
    // Extract before naming: a hostile or corrupt layer fails the pull, not a later run.
    let image = Image {
        name: key.clone(),
        record: record.clone(),
        manifest,
        config,
    };
    store
        .layers(&image)
        .map_err(|source| RegistryError::Extract {
            reference: key.clone(),
            source: Box::new(source),
        })?;
    store.tag(&key, &record)?;
    created.keep();
    Ok(Pulled {
        name: key.clone(),
        digest: top_digest,
        record,
    })
}

fn client(opts: &PullOptions, registry: &str) -> Result<Client, RegistryError> {
    // reqwest is built without a default crypto provider (ring is lighter than aws-lc-rs);
    // installing fails only when one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol: if opts.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| RegistryError::Registry {
        registry: registry.to_string(),
        detail: format!("setting up the HTTP client: {}", chain_text(&e)),
    })
}

impl Puller<'_> {
    /// Fetches the manifest of the reference, or of `by_digest` in its repository, and
    /// checks its digest against `expected` (the digest asked for) when given.
    async fn manifest(
        &self,
        by_digest: Option<&Digest>,
        expected: Option<&Digest>,
        created: &mut Created<'_>,
    ) -> Result<(Digest, Fetched), RegistryError> {
        let r = match by_digest {
            Some(d) => self.oref.clone_with_digest(d.to_string()),
            None => self.oref.clone(),
        };
        let (body, _) = self
            .client
            .pull_manifest_raw(&r, &RegistryAuth::Anonymous, &ACCEPT)
            .await
            .map_err(|e| match e {
                // oci-client compares the body with the digest asked for and with the one
                // the registry announces (Docker-Content-Digest).
                OciDistributionError::DigestError(
                    oci_client::errors::DigestError::VerificationError {
                        expected: announced,
                        actual,
                    },
                ) => {
                    let reference = self.ctx.reference.to_string();
                    match (announced.parse::<Digest>(), actual.parse::<Digest>()) {
                        (Ok(a), Ok(actual)) if Some(&a) == expected => {
                            RegistryError::ManifestDigest {
                                reference,
                                expected: a,
                                actual,
                            }
                        }
                        (Ok(announced), Ok(actual)) => RegistryError::AnnouncedDigest {
                            reference,
                            announced,
                            actual,
                        },
                        _ => RegistryError::Registry {
                            registry: self.ctx.registry.to_string(),
                            detail: format!(
                                "{reference}: manifest digest {actual} is not {announced}"
                            ),
                        },
                    }
                }
                e => classify(e, &self.ctx),
            })?;
        let actual = Digest::of(&body);
        if let Some(want) = expected {
            if &actual != want {
                return Err(RegistryError::ManifestDigest {
                    reference: self.ctx.reference.to_string(),
                    expected: want.clone(),
                    actual,
                });
            }
        }
        if body.len() as u64 > MAX_JSON_BLOB {
            return Err(RegistryError::BadManifest {
                reference: self.ctx.reference.to_string(),
                digest: actual,
                why: format!("larger than {MAX_JSON_BLOB} bytes"),
            });
        }
        let fetched = parse_manifest(self.ctx.reference, &actual, &body)?;
        if let Fetched::Manifest(_) = fetched {
            let put = self
                .store
                .put_blob(&actual, Some(body.len() as u64), &body[..])?;
            if put.created {
                created.blobs.push(actual.clone());
            }
        }
        Ok((actual, fetched))
    }

    /// Follows indexes down to the image manifest for the platform.
    async fn resolve(
        &self,
        mut digest: Digest,
        mut fetched: Fetched,
        opts: &PullOptions,
        created: &mut Created<'_>,
    ) -> Result<(Digest, ImageManifest), RegistryError> {
        for _ in 0..=MAX_INDEX_DEPTH {
            let index = match fetched {
                Fetched::Manifest(m) => return Ok((digest, *m)),
                Fetched::Index(i) => i,
            };
            let entry =
                pick_platform(&index, &opts.platform).ok_or_else(|| RegistryError::NoPlatform {
                    reference: self.ctx.reference.to_string(),
                    platform: opts.platform.clone(),
                    found: platforms(&index),
                })?;
            let d = desc_digest(self.ctx.reference, entry)?;
            tracing::debug!(index = %digest, manifest = %d, platform = %opts.platform, "picked from the index");
            (digest, fetched) = self.manifest(Some(&d), Some(&d), created).await?;
        }
        Err(RegistryError::BadManifest {
            reference: self.ctx.reference.to_string(),
            digest,
            why: format!("image indexes nested more than {MAX_INDEX_DEPTH} deep"),
        })
    }

    /// Downloads one blob into the store unless it is there; true when it stored it.
    /// Several run at once on the one thread, sharing `progress` (never borrowed across
    /// an await).
    async fn blob(
        &self,
        digest: &Digest,
        size: u64,
        progress: Option<&RefCell<&mut dyn Progress>>,
    ) -> Result<bool, RegistryError> {
        let report = |f: &dyn Fn(&mut dyn Progress)| {
            if let Some(p) = progress {
                f(&mut **p.borrow_mut());
            }
        };
        let Some(mut w) = self.store.blob_writer(digest, Some(size))? else {
            report(&|p| p.exists(digest, size));
            return Ok(false);
        };
        report(&|p| p.start(digest, size));
        let download = |detail: String| RegistryError::Download {
            registry: self.ctx.registry.to_string(),
            digest: digest.clone(),
            detail,
        };
        let desc = OciDescriptor {
            digest: digest.to_string(),
            size: size as i64,
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.oref, &desc)
            .await
            .map_err(|e| match classify(e, &self.ctx) {
                RegistryError::NotFound { .. } => download("not found in the repository".into()),
                other => other,
            })?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match mismatch(&e) {
                Some(actual) => StoreError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                }
                .into(),
                None => download(chain_text(&e)),
            })?;
            w.write(&chunk)?;
            let written = w.written();
            report(&|p| p.advance(digest, written));
        }
        let put = w.commit()?;
        report(&|p| p.done(digest));
        Ok(put.created)
    }
}

/// The actual digest of a download oci-client's verifying stream found wrong.
fn mismatch(e: &std::io::Error) -> Option<Digest> {
    let inner = e.get_ref()?;
    match inner.downcast_ref::<oci_client::errors::DigestError>()? {
        oci_client::errors::DigestError::VerificationError { actual, .. } => actual.parse().ok(),
        _ => None,
    }
}
