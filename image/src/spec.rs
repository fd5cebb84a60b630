//! The runtime spec (config.json) of a container made from an image: a `runc spec`-like
//! default, then the image config (Entrypoint, Cmd, Env, WorkingDir, User), then the
//! caller's overrides.

use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxCapabilities, Mount, MountBuilder, Root, Spec, User as SpecUser};

use crate::user::ExecUser;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `runc spec`'s defaults: namespaces pid, network, ipc, uts, mount and cgroup; mounts
/// proc, /dev tmpfs, devpts, shm, mqueue, sysfs and a read-only cgroup; runc's masked and
/// read-only paths; capabilities AUDIT_WRITE, KILL and NET_BIND_SERVICE; RLIMIT_NOFILE
/// 1024; no_new_privileges; all devices denied in the device cgroup. Unlike `runc spec`,
/// the root is writable, as `docker run` makes it.
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_version("1.0.2".to_string());
    spec.set_root(Some(
        Root::default()
            .set_path(PathBuf::from("rootfs"))
            .set_readonly(Some(false))
            .clone(),
    ));
    spec.set_hostname(Some("runv".to_string()));
    if let Some(p) = spec.process_mut() {
        let mut caps = LinuxCapabilities::default();
        // runc 1.1 dropped the inheritable set from its default (CVE-2022-29162).
        caps.set_inheritable(None);
        p.set_capabilities(Some(caps));
    }
    spec
}

/// What the image config and overrides say about the process.
#[derive(Debug, Clone, Default)]
pub struct ProcessSettings {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ExecUserSpec,
    pub terminal: bool,
}

/// The resolved user with the name it was given by.
#[derive(Debug, Clone, Default)]
pub struct ExecUserSpec {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl From<&ExecUser> for ExecUserSpec {
    fn from(u: &ExecUser) -> Self {
        Self {
            uid: u.uid,
            gid: u.gid,
            additional_gids: u.additional_gids.clone(),
        }
    }
}

/// Merges `KEY=VALUE` lists: later entries replace earlier ones with the same key, in
/// place; entries without `=` are kept as given (Docker passes them through too).
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        match out
            .iter_mut()
            .find(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// The command Docker would run: the entrypoint (overridden or the image's) followed by
/// the given args, or by the image's Cmd when none are given and the entrypoint was not
/// overridden.
pub fn command(
    image: &ImageConfiguration,
    entrypoint: Option<&[String]>,
    args: &[String],
) -> Vec<String> {
    let cfg = image.config().as_ref();
    let image_ep = cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default();
    let image_cmd = cfg.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let mut out = match entrypoint {
        Some(ep) => ep.to_vec(),
        None => image_ep,
    };
    if !args.is_empty() {
        out.extend(args.iter().cloned());
    } else if entrypoint.is_none() {
        out.extend(image_cmd);
    }
    out
}

/// Fills the process of `spec`.
pub fn set_process(spec: &mut Spec, s: &ProcessSettings) {
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(s.args.clone()));
    p.set_env(Some(s.env.clone()));
    p.set_cwd(PathBuf::from(&s.cwd));
    p.set_terminal(Some(s.terminal));
    let mut u = SpecUser::default();
    u.set_uid(s.user.uid);
    u.set_gid(s.user.gid);
    if !s.user.additional_gids.is_empty() {
        u.set_additional_gids(Some(s.user.additional_gids.clone()));
    }
    p.set_user(u);
    spec.set_process(Some(p));
}

/// A bind mount in the spec (`rbind`, plus `ro` when read-only).
pub fn bind_mount(source: PathBuf, destination: PathBuf, readonly: bool) -> Mount {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .expect("a bind mount with all fields set builds")
}
