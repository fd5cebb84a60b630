//! Resolving a Docker-style user (`name`, `uid`, `name:group`, `uid:gid`, ...) against the
//! rootfs's own /etc/passwd and /etc/group, read without following any symlink out of the
//! rootfs.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::unpack::resolve::{clean_entry_path, join, resolve_in_root, PathError};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {user:?}: no such user in the image's /etc/passwd")]
    NoUser { user: String },
    #[error("user {user:?}: no such group {group:?} in the image's /etc/group")]
    NoGroup { user: String, group: String },
    #[error("user {0:?} is not of the form user[:group] (names or numeric ids)")]
    Invalid(String),
    #[error("reading {path:?} in the rootfs: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Groups listing the user as a member, besides `gid`.
    pub additional_gids: Vec<u32>,
    /// The home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
    /// The user name, if the user is listed there.
    pub name: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads a file of the rootfs, resolving its path inside the rootfs; a missing file reads
/// as empty. At most 4 MiB.
fn read_rootfs_file(rootfs: &Path, path: &str) -> Result<String, UserError> {
    let comps = clean_entry_path(Path::new(path))?;
    let res = resolve_in_root(rootfs, &comps)?;
    let full = rootfs.join(join(&res));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&full);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(source) => {
            return Err(UserError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let mut data = Vec::new();
    f.take(4 << 20)
        .read_to_end(&mut data)
        .map_err(|source| UserError::Io {
            path: path.into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolves `spec` (empty means root) against `rootfs`. A numeric uid not in
/// /etc/passwd is allowed (gid 0 unless given), as Docker does; a name must be listed.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    if group_part == Some("") || spec.matches(':').count() > 1 {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let passwd = parse_passwd(&read_rootfs_file(rootfs, "/etc/passwd")?);
    let groups = parse_group(&read_rootfs_file(rootfs, "/etc/group")?);
    let entry =
        match user_part.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|p| p.uid == uid),
            Err(_) => Some(passwd.iter().find(|p| p.name == user_part).ok_or_else(|| {
                UserError::NoUser {
                    user: spec.to_string(),
                }
            })?),
        };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part
            .parse()
            .map_err(|_| UserError::Invalid(spec.to_string()))?,
    };
    let gid = match group_part {
        None => entry.map_or(0, |e| e.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup {
                    user: spec.to_string(),
                    group: g.to_string(),
                })?,
        },
    };
    let mut additional_gids = Vec::new();
    if let Some(e) = entry {
        for g in &groups {
            if g.members.contains(&e.name) && g.gid != gid && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home.clone()),
        name: entry.map(|e| e.name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:app,root\napp:x:1000:\naudio:x:29:app\n",
        )
        .unwrap();
        t
    }

    #[test]
    fn resolves_names_and_ids() {
        let t = rootfs();
        let r = |s: &str| resolve_user(t.path(), s).unwrap();
        assert_eq!(
            (r("").uid, r("").gid, r("").home.as_deref()),
            (0, 0, Some("/root"))
        );
        let app = r("app");
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, vec![10, 29]);
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        assert_eq!((r("app:wheel").uid, r("app:wheel").gid), (1000, 10));
        assert_eq!(r("app:wheel").additional_gids, vec![29]);
        assert_eq!((r("1000").uid, r("1000").gid), (1000, 1000));
        let unknown = r("4242:77");
        assert_eq!((unknown.uid, unknown.gid, unknown.home), (4242, 77, None));
        assert_eq!(r("4242").gid, 0);
    }

    #[test]
    fn errors_name_the_user() {
        let t = rootfs();
        for (spec, want) in [
            ("nobody", "no such user"),
            ("app:nogroup", "no such group"),
            ("a:b:c", "not of the form"),
            ("app:", "not of the form"),
        ] {
            let err = resolve_user(t.path(), spec).unwrap_err();
            assert!(
                err.to_string().contains(want) && err.to_string().contains(spec),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn passwd_symlink_out_of_the_rootfs_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(t.path().join("hostpasswd"), "host:x:7:7::/h:/bin/sh\n").unwrap();
        let outside = t.path().join("hostpasswd");
        std::os::unix::fs::symlink(&outside, root.join("etc/passwd")).unwrap();
        // Resolved inside the root, the link points at a file that is not there.
        assert!(matches!(
            resolve_user(&root, "host").unwrap_err(),
            UserError::NoUser { .. }
        ));
    }
}
