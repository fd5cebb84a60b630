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

impl FromStr for BlockConfig {
    type Err = String;

    /// `path=FILE[,ro][,id=NAME]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut path = None;
        let mut read_only = false;
        let mut id = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                Some(("id", v)) if !v.is_empty() && v.is_ascii() => id = Some(v.to_string()),
                None if part == "ro" => read_only = true,
                _ => {
                    return Err(format!(
                        "--block {s:?}: unknown or empty part {part:?} (expected path=FILE[,ro][,id=NAME], id ASCII)"
                    ))
                }
            }
        }
        let path = path.ok_or_else(|| format!("--block {s:?}: path=FILE is missing"))?;
        Ok(BlockConfig {
            path,
            read_only,
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
        for bad in [
            "",
            "ro",
            "path=",
            "path=/x,rw",
            "path=/x,id=",
            "path=/x,size=3",
        ] {
            let e = bad.parse::<BlockConfig>().unwrap_err();
            assert!(e.contains("--block"), "{bad}: {e}");
        }
    }
}
