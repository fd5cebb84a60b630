//! virtio-blk: a raw image file as a block device (`--block path=FILE[,ro][,id=NAME]`).
//!
//! IN, OUT, FLUSH and GET_ID; read-only images are offered with VIRTIO_BLK_F_RO and OUT
//! requests fail with IOERR. The capacity is the file size in 512-byte sectors (a partial
//! last sector is not visible). The serial (GET_ID, `/sys/block/vdX/serial`) is `id`, by
//! default the image's file name, truncated to 20 bytes. Writable images also offer
//! DISCARD (up to 16 segments, 4 KiB granularity): the range becomes a hole in the image
//! file (`fallocate` PUNCH_HOLE), which reads as zeros and frees the host's blocks.

pub mod device;
pub mod handler;

pub use device::Block;

use std::path::PathBuf;
use std::str::FromStr;

use crate::config::options::{self, Key, Spec};

/// Errors setting up a block device, naming the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image cannot be opened or its size read.
    #[error("cannot open block image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// One `--block` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw image.
    pub path: PathBuf,
    /// Offer the disk read-only and refuse writes.
    pub read_only: bool,
    /// Serial reported to the guest; the file name when absent.
    pub id: Option<String>,
}

impl BlockConfig {
    /// The serial: `id`, else the image's file name.
    pub fn id(&self) -> String {
        self.id.clone().unwrap_or_else(|| {
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }
}

/// `--block path=FILE[,ro][,id=NAME]`.
pub const OPTION: Spec = Spec::new(
    "--block",
    &[
        Key::required("path", "FILE"),
        Key::flag("ro"),
        Key::optional("id", "NAME"),
    ],
);

impl FromStr for BlockConfig {
    type Err = options::Error;

    /// `path=FILE[,ro][,id=NAME]`, see [`OPTION`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let o = OPTION.parse(s)?;
        let id: Option<String> = o.value("id")?;
        if id.as_deref().is_some_and(|id| !id.is_ascii()) {
            return Err(o.invalid("id", "the serial must be ASCII"));
        }
        Ok(BlockConfig {
            path: o.required("path")?,
            read_only: o.flag("ro"),
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_option_parses() {
        let c: BlockConfig = "path=/img/disk.raw,ro,id=data".parse().unwrap();
        assert_eq!(c.path, PathBuf::from("/img/disk.raw"));
        assert!(c.read_only);
        assert_eq!(c.id(), "data");
        let c: BlockConfig = "path=/img/disk.raw".parse().unwrap();
        assert!(!c.read_only);
        assert_eq!(c.id(), "disk.raw");
        crate::config::options::assert_refused::<BlockConfig>(
            &OPTION,
            &[
                ("", "empty item"),
                ("ro", "path= is missing"),
                ("path=", "path needs a value"),
                ("path=/x,rw", "unknown key \"rw\""),
                ("path=/x,id=", "id needs a value"),
                ("path=/x,size=3", "unknown key \"size\""),
                ("path=/x,path=/y", "path is given twice"),
                ("path=/x,ro=yes", "ro is a flag"),
                (
                    "path=/x,id=dïsk",
                    "id=dïsk is invalid: the serial must be ASCII",
                ),
            ],
        );
    }
}
