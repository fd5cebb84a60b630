//! A temporary directory for tests whose tree may hold what a plain removal cannot take
//! away as an unprivileged user: read-only directories, as unpacked images ship them.
//! Other crates' tests get it with the `test-util` feature.

use std::path::Path;

/// A [`tempfile::TempDir`] removed with [`crate::unpack::remove_tree`] on drop, which
/// first gives the tree's directories owner write and search permission.
pub struct TempTree(tempfile::TempDir);

impl TempTree {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("creating a temporary directory"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for TempTree {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        // The TempDir's own removal then finds nothing left.
        let _ = crate::unpack::remove_tree(self.0.path());
    }
}
