//! Checks on a spec (or an exec's process) before libcontainer sees it, so that a bad
//! field is refused with an error naming it and its value, instead of a failure deep
//! inside a forked process.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use runv_agent_protocol::{ErrorCode, ErrorResponse};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const MAX_SYMLINKS: usize = 40;

fn invalid(field: &str, message: String) -> ErrorResponse {
    ErrorResponse::field(ErrorCode::InvalidArgument, field, message)
}

/// Checks the parts of a container spec the agent can check up front.
pub fn check_spec(spec: &Spec, rootfs: &Path) -> Result<(), ErrorResponse> {
    if !rootfs.is_dir() {
        return Err(invalid(
            "root.path",
            format!("root.path {:?}: not a directory", rootfs.display()),
        ));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "process: missing (nothing to run)".into()))?;
    let mounts: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().clone())
        .collect();
    check_process(process, rootfs, &mounts)
}

/// Checks a process: args, cwd, the binary and the user. `mounts` are destinations
/// that will exist at run time although the rootfs does not have them yet.
pub fn check_process(
    process: &Process,
    rootfs: &Path,
    mounts: &[PathBuf],
) -> Result<(), ErrorResponse> {
    let args = process.args().as_deref().unwrap_or_default();
    let Some(argv0) = args.first() else {
        return Err(invalid(
            "process.args",
            "process.args: empty (nothing to run)".into(),
        ));
    };
    if argv0.is_empty() {
        return Err(invalid(
            "process.args",
            "process.args[0]: empty string".into(),
        ));
    }
    let user = process.user();
    if user.uid() == u32::MAX {
        return Err(invalid(
            "process.user.uid",
            format!("process.user.uid {}: not a valid user id", user.uid()),
        ));
    }
    if user.gid() == u32::MAX {
        return Err(invalid(
            "process.user.gid",
            format!("process.user.gid {}: not a valid group id", user.gid()),
        ));
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("process.cwd {:?}: not an absolute path", cwd.display()),
        ));
    }
    if !under_mount(cwd, mounts) {
        match resolve_in_root(rootfs, cwd) {
            Some(p) if p.is_dir() => {}
            _ => {
                return Err(invalid(
                    "process.cwd",
                    format!(
                        "process.cwd {:?}: no such directory in the container's rootfs",
                        cwd.display()
                    ),
                ))
            }
        }
    }
    check_binary(
        argv0,
        process.env().as_deref().unwrap_or_default(),
        rootfs,
        mounts,
    )
}

fn check_binary(
    argv0: &str,
    env: &[String],
    rootfs: &Path,
    mounts: &[PathBuf],
) -> Result<(), ErrorResponse> {
    let missing = || {
        invalid(
            "process.args",
            format!("process.args[0] {argv0:?}: no such executable in the container's rootfs"),
        )
    };
    let candidates: Vec<PathBuf> = if argv0.contains('/') {
        // A relative path with a slash is relative to cwd; only absolute ones are checked.
        if !argv0.starts_with('/') {
            return Ok(());
        }
        vec![PathBuf::from(argv0)]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(argv0))
            .collect()
    };
    for c in &candidates {
        if under_mount(c, mounts) {
            return Ok(());
        }
        if let Some(p) = resolve_in_root(rootfs, c) {
            if is_executable(&p) {
                return Ok(());
            }
        }
    }
    Err(missing())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn under_mount(p: &Path, mounts: &[PathBuf]) -> bool {
    mounts
        .iter()
        .any(|m| m != Path::new("/") && p.starts_with(m))
}

/// The host path of container path `p`, following symlinks as the container would
/// (absolute targets are relative to `root`, `..` never leaves it). `None` when a
/// component is missing or there are too many links.
pub fn resolve_in_root(root: &Path, p: &Path) -> Option<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = p
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let host = done
            .iter()
            .fold(root.to_path_buf(), |acc, c| acc.join(c))
            .join(&name);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                done.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => todo.push(n.to_os_string()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
        } else {
            done.push(name);
        }
    }
    Some(done.iter().fold(root.to_path_buf(), |acc, c| acc.join(c)))
}

#[cfg(test)]
mod tests;
