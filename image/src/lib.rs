//! Container images for hyperctl: reading images from OCI layouts, OCI tarballs and
//! `docker save` archives into a content-addressed store, unpacking their layers safely,
//! and preparing OCI bundles from them. See docs/images.md.

pub mod compress;
pub mod digest;
pub mod import;
pub mod unpack;

pub use digest::Digest;
pub mod reference;
pub mod store;

pub use store::{Image, ImageRecord, Store, StoreError};

#[cfg(test)]
mod import_tests;
#[cfg(test)]
pub(crate) mod testutil;
