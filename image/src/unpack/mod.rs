//! Safe layer unpacking. A layer tar is first extracted on its own into a private
//! directory ([`extract_layer`]); the whiteouts, opaque markers, implicit parent directories
//! and hard links to lower layers it holds are recorded in [`LayerChanges`] instead of the
//! tree. Layers are then applied in order onto a rootfs ([`apply_layer`]) with the tar
//! semantics containerd uses: paths resolved inside the rootfs, a directory merged with a
//! directory, anything else replaced.

mod apply;
mod extract;
pub(crate) mod fsops;
pub mod resolve;

use std::io;
use std::path::PathBuf;

pub use apply::apply_layer;
pub use extract::extract_layer;
pub use fsops::remove_tree;
pub use resolve::PathError;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod tests;

/// Errors of unpacking and applying layers. Each names the entry or path that failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: {source}")]
    Path {
        entry: PathBuf,
        #[source]
        source: PathError,
    },
    #[error("layer entry {entry:?}: device nodes are only created when running as root")]
    DeviceNotAllowed { entry: PathBuf },
    #[error("layer entry {entry:?}: hard link target {target:?} {why}")]
    BadHardlink {
        entry: PathBuf,
        target: PathBuf,
        why: &'static str,
    },
    #[error("layer entry {entry:?}: parent {parent:?} exists and is not a directory")]
    NotADirectory { entry: PathBuf, parent: PathBuf },
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| UnpackError::Io { op, path, source }
    }
}

/// Options for extracting and applying layers.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Create device nodes and set ownership from the layer. True by default when running
    /// as root; when false a device node entry is an error and files keep the caller's
    /// ownership.
    pub privileged: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            privileged: nix::unistd::geteuid().is_root(),
        }
    }
}

/// What a layer does besides adding files, kept next to its extracted tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerChanges {
    /// Paths (as written in the tar, cleaned) that this layer deletes from lower layers.
    pub whiteouts: Vec<PathBuf>,
    /// Directories (as written in the tar) whose lower-layer contents this layer hides.
    pub opaque_dirs: Vec<PathBuf>,
    /// Directories of the extracted tree that the tar never named, created only to hold
    /// entries. Applied by resolving through the rootfs's symlinks, so an entry
    /// `var/run/x` over a lower `var/run -> /run` lands in `run/x`.
    pub implicit_dirs: Vec<PathBuf>,
    /// Hard links (path, target) whose target is not in this layer but, presumably, in a
    /// lower one; made when the layer is applied.
    pub lower_links: Vec<(PathBuf, PathBuf)>,
}
