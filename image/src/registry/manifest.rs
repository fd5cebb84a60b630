//! The manifest side of a pull, with no network: telling image indexes from image
//! manifests, refusing schema 1 and other media types, picking a platform from an index,
//! and checking that a manifest is a container image we can unpack.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::RegistryError;
use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer media types we can unpack (the store detects gzip/zstd from the bytes).
const LAYER_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// An `os/arch[/variant]` platform, picked from image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    /// `linux/<host arch>`.
    fn default() -> Self {
        Self {
            os: "linux".into(),
            arch: crate::import::host_arch().into(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = (2..=3).contains(&parts.len())
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !ok {
            return Err(RegistryError::BadPlatform(s.to_string()));
        }
        Ok(Self {
            os: parts[0].into(),
            arch: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest as fetched: an image index (or Docker manifest list) or an image manifest.
#[derive(Debug, Clone)]
pub enum Fetched {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// Parses a manifest body, telling indexes from image manifests by `mediaType` (or, when
/// absent as OCI allows, by their fields). Schema 1 and other media types are refused.
pub fn parse_manifest(
    reference: &str,
    digest: &Digest,
    body: &[u8],
) -> Result<Fetched, RegistryError> {
    let bad = |why: String| RegistryError::BadManifest {
        reference: reference.to_string(),
        digest: digest.clone(),
        why,
    };
    let v: Versioned = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let mt = v.media_type.as_deref();
    if v.schema_version == Some(1) || matches!(mt, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
        return Err(RegistryError::Schema1 {
            reference: reference.to_string(),
        });
    }
    if v.schema_version != Some(2) {
        return Err(bad(format!(
            "schemaVersion is {:?}, not 2",
            v.schema_version
        )));
    }
    let is_index = match mt {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(RegistryError::UnsupportedManifest {
                reference: reference.to_string(),
                digest: digest.clone(),
                media_type: other.to_string(),
            })
        }
        None if v.manifests.is_some() => true,
        None if v.config.is_some() => false,
        None => {
            return Err(bad(
                "neither manifests nor config: no mediaType to tell".into()
            ))
        }
    };
    if is_index {
        serde_json::from_slice(body)
            .map(|i| Fetched::Index(Box::new(i)))
            .map_err(|e| bad(format!("as an image index: {e}")))
    } else {
        serde_json::from_slice(body)
            .map(|m| Fetched::Manifest(Box::new(m)))
            .map_err(|e| bad(format!("as an image manifest: {e}")))
    }
}

/// The index entry for `platform`: same OS and architecture, and the variant when one is
/// asked for. `None` when the index has none.
pub fn pick_platform<'i>(index: &'i ImageIndex, platform: &Platform) -> Option<&'i Descriptor> {
    index.manifests().iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == platform.os
                && p.architecture().to_string() == platform.arch
                && platform
                    .variant
                    .as_ref()
                    .as_ref()
                    .map_or(true, |v| p.variant().as_deref() == Some(v.as_str()))
        })
    })
}

/// The platforms an index lists, for error messages.
pub(crate) fn platforms(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect()
}

/// Refuses manifests whose config is not an image config or whose layers we cannot
/// unpack (foreign/Windows layers, encrypted layers, artifacts of other kinds).
pub fn check_image_manifest(reference: &str, m: &ImageManifest) -> Result<(), RegistryError> {
    let not_image = |why: String| RegistryError::NotAnImage {
        reference: reference.to_string(),
        why,
    };
    let cmt = m.config().media_type().to_string();
    if cmt != OCI_CONFIG && cmt != DOCKER_CONFIG {
        return Err(not_image(format!("its config has media type {cmt:?}")));
    }
    for l in m.layers() {
        let lmt = l.media_type().to_string();
        if !LAYER_TYPES.contains(&lmt.as_str()) {
            return Err(not_image(format!(
                "layer {} has media type {lmt:?}, which hyperctl cannot unpack",
                l.digest()
            )));
        }
    }
    Ok(())
}
