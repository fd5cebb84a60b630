//! Container images for hyperctl: reading images from OCI layouts, OCI tarballs and
//! `docker save` archives into a content-addressed store, unpacking their layers safely,
//! preparing OCI bundles from them, and pulling images from registries. See docs/images.md.

pub mod bundle;
pub mod compress;
pub mod digest;
pub mod gc;
pub mod import;
pub mod unpack;

pub use digest::Digest;
pub mod reference;
pub mod registry;
pub mod spec;
pub mod store;
pub mod user;

pub use bundle::{prepare_bundle, BindMount, BundleError, Overrides};
pub use import::{import_path, ImportError, ImportOptions, Imported};
pub use registry::{pull, Platform, PullOptions, Pulled, RegistryError};
pub use store::{BlobWriter, Image, ImageRecord, Store, StoreError};

#[cfg(any(test, feature = "test-util"))]
pub mod testdir;

#[cfg(test)]
mod bundle_tests;
#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
pub(crate) mod testutil;
