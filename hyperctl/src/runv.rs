//! The runv binary hyperctl drives: found via `HYPERCTL_RUNV`, else next to hyperctl,
//! else on PATH, and always called with `--root <hyperctl root>/runv`, so that a
//! container run by hyperctl goes through exactly `runv run`'s code path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How to call runv for one hyperctl root.
#[derive(Debug, Clone)]
pub struct Runv {
    pub bin: PathBuf,
    pub root: PathBuf,
}

/// A container's status as `runv state` reports it (`created`, `running`, `paused`,
/// `stopped`), or `None` when runv has no such container.
pub type Status = Option<String>;

impl Runv {
    pub fn new(hyperctl_root: &Path) -> Result<Self> {
        Ok(Self {
            bin: locate(
                std::env::var_os("HYPERCTL_RUNV"),
                std::env::current_exe().ok(),
                std::env::var_os("PATH"),
            )?,
            root: hyperctl_root.join("runv"),
        })
    }

    /// `runv --root R ARGS...`, ready to spawn.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Runs a short runv call with captured output; an error carries runv's stderr.
    pub fn call(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "runv {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The container's status, `None` when runv does not know it.
    pub fn status(&self, name: &str) -> Result<Status> {
        let out = self
            .command(["state", name])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("does not exist") {
                return Ok(None);
            }
            bail!("runv state {name}: {}", err.trim());
        }
        parse_status(&out.stdout).with_context(|| format!("runv state {name}"))
    }

    /// Deletes runv's container if it exists (`--force`: also a running one).
    pub fn delete(&self, name: &str, force: bool) -> Result<()> {
        if self.status(name)?.is_none() {
            return Ok(());
        }
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(name);
        match self.call(&args) {
            // Gone in between (a foreground run deleting its own container).
            Err(e) if e.to_string().contains("does not exist") => Ok(()),
            other => other.map(drop),
        }
    }
}

fn parse_status(json: &[u8]) -> Result<Status> {
    #[derive(serde::Deserialize)]
    struct State {
        status: String,
    }
    let s: State = serde_json::from_slice(json).context("parsing its JSON")?;
    Ok(Some(s.status))
}

/// `env` (HYPERCTL_RUNV) if set; else `runv` next to `exe`; else the first on `path`.
fn locate(env: Option<OsString>, exe: Option<PathBuf>, path: Option<OsString>) -> Result<PathBuf> {
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !is_executable(&p) {
            bail!("HYPERCTL_RUNV={}: not an executable file", p.display());
        }
        return Ok(p);
    }
    let mut tried = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        let p = dir.join("runv");
        if is_executable(&p) {
            return Ok(p);
        }
        tried.push(p);
    }
    for dir in path.iter().flat_map(std::env::split_paths) {
        let p = dir.join("runv");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    tried.push(PathBuf::from("runv on PATH"));
    bail!(
        "runv not found (tried {}); install it next to hyperctl or set HYPERCTL_RUNV",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn locate_order() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let next = exe(&a, "runv");
        let on_path = exe(&b, "runv");
        let env = exe(t.path(), "my-runv");
        let hyper = Some(a.join("hyperctl"));
        let path = Some(OsString::from(b.as_os_str()));
        assert_eq!(
            locate(Some(env.clone().into()), hyper.clone(), path.clone()).unwrap(),
            env
        );
        assert_eq!(
            locate(Some("".into()), hyper.clone(), path.clone()).unwrap(),
            next
        );
        assert_eq!(
            locate(None, Some(b.join("hyperctl")), None).unwrap(),
            on_path
        );
        assert_eq!(
            locate(None, Some(t.path().join("hyperctl")), path.clone()).unwrap(),
            on_path
        );
        let e = locate(None, Some(t.path().join("hyperctl")), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runv not found") && e.contains("HYPERCTL_RUNV"),
            "{e}"
        );
        let e = locate(
            Some(t.path().join("nope").into()),
            hyper.clone(),
            path.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("HYPERCTL_RUNV=") && e.contains("nope"), "{e}");
        // Not executable: skipped.
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(locate(None, hyper, path).unwrap(), on_path);
    }

    #[test]
    fn state_json() {
        let s = parse_status(br#"{"ociVersion":"1.0.2","id":"x","status":"running","pid":5}"#);
        assert_eq!(s.unwrap().as_deref(), Some("running"));
        assert!(parse_status(b"not json").is_err());
        assert!(parse_status(b"{}").is_err());
    }
}
