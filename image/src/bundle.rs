//! Preparing an OCI bundle (`rootfs/` + `config.json`) from an image in the store.
//!
//! The rootfs is a plain copy of the cached extracted layers applied in order (file data
//! goes through `copy_file_range`, which shares extents on file systems that can). Not
//! hard links into the cache: the container writes to its rootfs, and a write through a
//! shared inode would change the cache and every other container made from it.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::Spec;

use crate::spec::{self, ProcessSettings, DEFAULT_PATH};
use crate::store::{Image, Store, StoreError};
use crate::unpack::resolve::{clean_entry_path, join, resolve_in_root};
use crate::unpack::{self, UnpackError};
use crate::user::{self, UserError};

/// Errors of bundle preparation. Each names the input that failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bind mount {0:?} is not HOST:CONTAINER[:ro|rw] with absolute paths")]
    BadMount(String),
    #[error("bind mount source {path:?}: {source}")]
    MountSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("environment entry {0:?} is not KEY=VALUE")]
    BadEnv(String),
    #[error("working directory {0:?} is not an absolute path")]
    BadCwd(String),
    #[error("hostname {0:?} is not 1-64 letters, digits, '-' or '.'")]
    BadHostname(String),
    #[error("image {0}: no command given and the image has neither Entrypoint nor Cmd")]
    NoCommand(String),
    #[error("bundle directory {0:?} exists and is not empty")]
    DestNotEmpty(PathBuf),
    #[error("image {image}: {source}")]
    User {
        image: String,
        #[source]
        source: UserError,
    },
    #[error("image {image}: applying layer {diff_id}: {source}")]
    Apply {
        image: String,
        diff_id: String,
        #[source]
        source: Box<UnpackError>,
    },
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

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.into();
    move |source| BundleError::Io { op, path, source }
}

/// `-v HOST:CONTAINER[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub readonly: bool,
}

impl FromStr for BindMount {
    type Err = BundleError;
    fn from_str(s: &str) -> Result<Self, BundleError> {
        let bad = || BundleError::BadMount(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, readonly) = match parts.as_slice() {
            [h, c] => (*h, *c, false),
            [h, c, "ro"] => (*h, *c, true),
            [h, c, "rw"] => (*h, *c, false),
            _ => return Err(bad()),
        };
        let host = PathBuf::from(host);
        let container = PathBuf::from(container);
        let no_dotdot = |p: &Path| !p.components().any(|c| c == Component::ParentDir);
        if !host.is_absolute()
            || !container.is_absolute()
            || !no_dotdot(&container)
            || container == Path::new("/")
        {
            return Err(bad());
        }
        Ok(Self {
            host,
            container,
            readonly,
        })
    }
}

/// What `hyperctl run` flags change from the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Arguments after the image name: replace the image's Cmd.
    pub args: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint (and drops its Cmd).
    pub entrypoint: Option<Vec<String>>,
    /// `-e KEY=VALUE`, applied over the image's Env.
    pub env: Vec<String>,
    /// `-w`.
    pub cwd: Option<String>,
    /// `-u user[:group]`.
    pub user: Option<String>,
    /// `-t`.
    pub terminal: bool,
    /// `-v`.
    pub mounts: Vec<BindMount>,
    pub hostname: Option<String>,
}

impl Overrides {
    fn validate(&self) -> Result<(), BundleError> {
        for e in &self.env {
            if !matches!(e.split_once('='), Some((k, _)) if !k.is_empty()) {
                return Err(BundleError::BadEnv(e.clone()));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') {
                return Err(BundleError::BadCwd(cwd.clone()));
            }
        }
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(BundleError::BadHostname(h.clone()));
            }
        }
        for m in &self.mounts {
            std::fs::metadata(&m.host).map_err(|source| BundleError::MountSource {
                path: m.host.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Makes `dest/rootfs` from the image's layers and `dest/config.json` from its config and
/// `ov`, and returns the spec written. `dest` must be absent or an empty directory; on
/// error whatever this call created is removed again.
pub fn prepare_bundle(
    store: &Store,
    image: &Image,
    dest: &Path,
    ov: &Overrides,
) -> Result<Spec, BundleError> {
    ov.validate()?;
    let _hold = store.hold()?;
    let created = match std::fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(BundleError::DestNotEmpty(dest.to_path_buf()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Private: the rootfs may hold set-uid binaries and device nodes of the image.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dest)
                .map_err(io_err("creating bundle directory", dest))?;
            true
        }
        Err(e) => return Err(io_err("reading", dest)(e)),
    };
    let result = build(store, image, dest, ov);
    if result.is_err() {
        let cleanup = if created {
            unpack::remove_tree(dest)
        } else {
            unpack::remove_tree(&dest.join("rootfs")).and_then(|()| {
                match std::fs::remove_file(dest.join("config.json")) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
        };
        if let Err(e) = cleanup {
            tracing::warn!(dest = %dest.display(), error = %e, "could not remove a half-prepared bundle");
        }
    }
    result
}

fn build(store: &Store, image: &Image, dest: &Path, ov: &Overrides) -> Result<Spec, BundleError> {
    let rootfs = dest.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io_err("creating", &rootfs))?;
    let opts = store.unpack_options();
    for layer in store.layers(image)? {
        unpack::apply_layer(&layer.root, &layer.changes, &rootfs, opts).map_err(|source| {
            BundleError::Apply {
                image: image.name.clone(),
                diff_id: layer.diff_id.to_string(),
                source: Box::new(source),
            }
        })?;
    }
    let spec = make_spec(image, &rootfs, ov)?;
    let path = dest.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).expect("a runtime spec serialises");
    std::fs::write(&path, json).map_err(io_err("writing", &path))?;
    Ok(spec)
}

/// The spec for a container of `image` whose rootfs is at `rootfs`. Creates the working
/// directory in the rootfs when the image lacks it, as Docker does.
pub fn make_spec(image: &Image, rootfs: &Path, ov: &Overrides) -> Result<Spec, BundleError> {
    let cfg = image.config.config().as_ref();
    let args = spec::command(&image.config, ov.entrypoint.as_deref(), &ov.args);
    if args.is_empty() {
        return Err(BundleError::NoCommand(image.name.clone()));
    }
    let user_spec = ov
        .user
        .clone()
        .or_else(|| cfg.and_then(|c| c.user().clone()))
        .unwrap_or_default();
    let user = user::resolve_user(rootfs, &user_spec).map_err(|source| BundleError::User {
        image: image.name.clone(),
        source,
    })?;
    let mut env = cfg.and_then(|c| c.env().clone()).unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let mut defaults = vec![format!(
        "HOME={}",
        user.home
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or("/")
    )];
    if ov.terminal {
        defaults.push("TERM=xterm".to_string());
    }
    for d in defaults {
        let key = d.split('=').next().unwrap_or_default().to_string() + "=";
        if !env.iter().any(|e| e.starts_with(&key)) {
            env.push(d);
        }
    }
    let env = spec::merge_env(&env, &ov.env);
    let cwd = ov
        .cwd
        .clone()
        .or_else(|| {
            cfg.and_then(|c| c.working_dir().clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(BundleError::BadCwd(cwd));
    }
    ensure_dir_in_rootfs(rootfs, &cwd)?;

    let mut spec = spec::default_spec();
    spec::set_process(
        &mut spec,
        &ProcessSettings {
            args,
            env,
            cwd,
            user: (&user).into(),
            terminal: ov.terminal,
        },
    );
    if let Some(h) = &ov.hostname {
        spec.set_hostname(Some(h.clone()));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &ov.mounts {
        mounts.push(spec::bind_mount(
            m.host.clone(),
            m.container.clone(),
            m.readonly,
        ));
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

/// Creates `dir` (absolute, as seen in the container) inside `rootfs` if missing,
/// resolving symlinks inside the rootfs.
fn ensure_dir_in_rootfs(rootfs: &Path, dir: &str) -> Result<(), BundleError> {
    let comps =
        clean_entry_path(Path::new(dir)).map_err(|_| BundleError::BadCwd(dir.to_string()))?;
    let res = resolve_in_root(rootfs, &comps).map_err(|_| BundleError::BadCwd(dir.to_string()))?;
    let full = rootfs.join(join(&res));
    if full.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(&full).map_err(io_err("creating working directory", &full))
}
