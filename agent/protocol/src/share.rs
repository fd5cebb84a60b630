//! Locations inside a virtio-fs share: a tag plus a relative subpath.
//!
//! The agent mounts every share named in `CreateSandbox` at
//! `GUEST_SHARE_ROOT/<tag>`; a [`ShareLocation`] then names a guest path without
//! naming any host path.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the agent mounts the virtio-fs share with tag `T`: `GUEST_SHARE_ROOT/T`.
pub const GUEST_SHARE_ROOT: &str = "/run/runv/shares";

/// Longest virtio-fs tag (the `tag` field of the device config space is 36 bytes).
pub const MAX_TAG_LEN: usize = 36;

/// An invalid tag or subpath.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("invalid share tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: &'static str },
    #[error("invalid subpath {subpath:?} in share {tag:?}: {reason}")]
    InvalidSubpath {
        tag: String,
        subpath: String,
        reason: &'static str,
    },
}

/// A path inside a virtio-fs share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShareLocation {
    /// The virtio-fs tag of the share.
    pub tag: String,
    /// A relative path inside the share: `/`-separated, no `.`, `..` or empty
    /// components. Empty means the share's root.
    pub subpath: String,
}

/// Checks a virtio-fs tag: 1 to 36 bytes of `[A-Za-z0-9._-]`.
pub fn validate_tag(tag: &str) -> Result<(), ShareError> {
    let bad = |reason| ShareError::InvalidTag {
        tag: tag.to_owned(),
        reason,
    };
    if tag.is_empty() {
        return Err(bad("empty"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(bad("longer than 36 bytes"));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    if tag == "." || tag == ".." {
        return Err(bad("'.' and '..' are not tags"));
    }
    Ok(())
}

/// Checks one path component used to build subpaths (a container directory name).
pub fn validate_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty path component");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if name.contains('/') || name.contains('\0') {
        return Err("'/' and NUL are not allowed");
    }
    Ok(())
}

impl ShareLocation {
    /// A location, validated.
    pub fn new(tag: impl Into<String>, subpath: impl Into<String>) -> Result<Self, ShareError> {
        let loc = ShareLocation {
            tag: tag.into(),
            subpath: subpath.into(),
        };
        loc.validate()?;
        Ok(loc)
    }

    /// Checks the tag and that the subpath cannot leave the share.
    pub fn validate(&self) -> Result<(), ShareError> {
        validate_tag(&self.tag)?;
        if self.subpath.is_empty() {
            return Ok(());
        }
        let bad = |reason| ShareError::InvalidSubpath {
            tag: self.tag.clone(),
            subpath: self.subpath.clone(),
            reason,
        };
        if self.subpath.starts_with('/') {
            return Err(bad("must be relative"));
        }
        for part in self.subpath.split('/') {
            validate_component(part).map_err(bad)?;
        }
        Ok(())
    }

    /// The path of this location inside the guest, once the agent has mounted the
    /// share: `GUEST_SHARE_ROOT/<tag>/<subpath>`.
    pub fn guest_path(&self) -> Result<PathBuf, ShareError> {
        self.validate()?;
        let mut p = Path::new(GUEST_SHARE_ROOT).join(&self.tag);
        if !self.subpath.is_empty() {
            p.push(&self.subpath);
        }
        Ok(p)
    }

    /// The path of this location on the host, given the share's host directory.
    pub fn host_path(&self, share_dir: &Path) -> Result<PathBuf, ShareError> {
        self.validate()?;
        let p = share_dir.join(&self.subpath);
        // `validate` guarantees only normal components were appended.
        debug_assert!(Path::new(&self.subpath)
            .components()
            .all(|c| matches!(c, Component::Normal(_))));
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_path_joins_root_tag_and_subpath() {
        let loc = ShareLocation::new("runv", "c1/rootfs").unwrap();
        assert_eq!(
            loc.guest_path().unwrap(),
            PathBuf::from("/run/runv/shares/runv/c1/rootfs")
        );
        assert_eq!(
            loc.host_path(Path::new("/run/runv/sb/shared")).unwrap(),
            PathBuf::from("/run/runv/sb/shared/c1/rootfs")
        );
        let root = ShareLocation::new("runv", "").unwrap();
        assert_eq!(
            root.guest_path().unwrap(),
            PathBuf::from("/run/runv/shares/runv")
        );
    }

    #[test]
    fn escaping_subpaths_are_rejected() {
        for sub in ["/abs", "a/../b", "..", "a//b", "a/./b", "a/", "a\0b"] {
            let err = ShareLocation::new("runv", sub).unwrap_err();
            assert!(
                matches!(err, ShareError::InvalidSubpath { .. }),
                "{sub:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{sub:?}")));
        }
    }

    #[test]
    fn bad_tags_are_rejected() {
        let long = "x".repeat(37);
        for tag in ["", "a b", "a/b", "..", long.as_str()] {
            assert!(matches!(
                ShareLocation::new(tag, "x"),
                Err(ShareError::InvalidTag { .. })
            ));
        }
        assert!(ShareLocation::new("x".repeat(36), "x").is_ok());
    }
}
