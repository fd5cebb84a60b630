//! hyperctl's containers: `<root>/containers/<name>/` holds `container.json` (what was run,
//! from which image, when), `bundle/` (the OCI bundle runv runs), `log` (a detached
//! container's output) and, while a terminal is being handed over, `console.sock`.
//! A name is taken by creating its directory, so two runs cannot get the same one.

use std::fs::DirBuilder;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What `hyperctl run` recorded about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// The image's name in the store (normalised) or its manifest digest.
    pub image: String,
    /// The image's manifest digest, so that `rmi` of any name of it sees the container.
    pub manifest: String,
    pub command: Vec<String>,
    /// RFC 3339.
    pub created: String,
    pub detached: bool,
    /// The exit code, once a foreground run has ended.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// The containers directory of a hyperctl root.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
}

/// A container name: docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok || name.len() > 64 {
        bail!(
            "invalid container name {name:?}: use letters, digits, '_', '.' and '-', \
             starting with a letter or digit, at most 64 characters"
        );
    }
    Ok(())
}

/// A fresh name: `hyperctl-` and 8 random hex digits.
pub fn generate_name() -> Result<String> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for a container name")?;
    Ok(format!("hyperctl-{}", hex(&b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Containers {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("containers"),
        }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn bundle(&self, name: &str) -> PathBuf {
        self.dir(name).join("bundle")
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir(name).join("log")
    }

    pub fn console_socket(&self, name: &str) -> PathBuf {
        self.dir(name).join("console.sock")
    }

    /// Takes `name`: creates its directory (0700), refusing a name in use.
    pub fn reserve(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let dir = self.dir(name);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                bail!("container name {name:?} is already in use (hyperctl rm {name} frees it)")
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }

    /// Whether `name` is a valid name whose directory exists (with or without a record).
    pub fn is_reserved(&self, name: &str) -> bool {
        validate_name(name).is_ok() && self.dir(name).is_dir()
    }

    /// Writes the record (temp file + rename).
    pub fn save(&self, rec: &Record) -> Result<()> {
        let path = self.dir(&rec.name).join("container.json");
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(rec).expect("a record serialises");
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The record of `name`; a clear error when there is no such container.
    pub fn load(&self, name: &str) -> Result<Record> {
        validate_name(name).map_err(|_| anyhow::anyhow!("no such container: {name:?}"))?;
        let path = self.dir(name).join("container.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("no such container: {name}")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    /// Every container with a record, by name. Directories without one (a run that is
    /// still preparing its bundle, or was killed while doing so) are left out.
    pub fn list(&self) -> Result<Vec<Record>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("reading {}", self.dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_name(&name).is_err() || !entry.path().join("container.json").exists() {
                continue;
            }
            out.push(self.load(&name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the container's directory: bundle (a rootfs with the image's modes, so not
    /// plain `remove_dir_all`), log, record.
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.dir(name);
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
            Ok(_) => {}
        }
        runv_image::unpack::remove_tree(&dir).with_context(|| format!("removing {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Record {
        Record {
            name: name.into(),
            image: "docker.io/library/busybox:latest".into(),
            manifest: format!("sha256:{}", "a".repeat(64)),
            command: vec!["sh".into()],
            created: "2026-01-01T00:00:00Z".into(),
            detached: false,
            exit_code: None,
        }
    }

    #[test]
    fn names() {
        for good in ["a", "web-1", "x.y_z", "A9", &"n".repeat(64)] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a/b",
            "..",
            "a b",
            "ä",
            &"n".repeat(65),
        ] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let a = generate_name().unwrap();
        let b = generate_name().unwrap();
        validate_name(&a).unwrap();
        assert!(a.starts_with("hyperctl-") && a.len() == 17, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_save_load_list_remove() {
        // TempTree: the read-only directory below goes away even if the test fails
        // before its own removal.
        let t = runv_image::testdir::TempTree::new();
        let c = Containers::new(t.path());
        assert!(c.list().unwrap().is_empty());
        let dir = c.reserve("one").unwrap();
        assert!(dir.is_dir());
        let e = c.reserve("one").unwrap_err().to_string();
        assert!(e.contains("\"one\" is already in use"), "{e}");
        assert!(c.reserve("../x").is_err());
        assert!(!t.path().join("x").exists());
        // Reserved but not yet recorded: not listed, and load says so.
        assert!(c.list().unwrap().is_empty());
        assert!(c.is_reserved("one") && !c.is_reserved("nine") && !c.is_reserved(".."));
        assert!(c
            .load("one")
            .unwrap_err()
            .to_string()
            .contains("no such container"));
        let mut r = record("one");
        c.save(&r).unwrap();
        r.exit_code = Some(3);
        c.save(&r).unwrap();
        assert_eq!(c.load("one").unwrap(), r);
        c.reserve("two").unwrap();
        c.save(&record("two")).unwrap();
        let names: Vec<_> = c.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["one", "two"]);
        // A read-only directory inside the bundle does not stop removal.
        let ro = c.bundle("one").join("rootfs/ro");
        std::fs::create_dir_all(ro.join("sub")).unwrap();
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        c.remove("one").unwrap();
        assert!(!c.dir("one").exists());
        c.remove("one").unwrap();
        assert!(c.load("one").is_err());
        assert!(c
            .load("../../etc")
            .unwrap_err()
            .to_string()
            .contains("no such container"));
    }

    #[test]
    fn a_corrupt_record_names_its_file() {
        let t = tempfile::tempdir().unwrap();
        let c = Containers::new(t.path());
        c.reserve("bad").unwrap();
        std::fs::write(c.dir("bad").join("container.json"), b"{").unwrap();
        let e = format!("{:#}", c.load("bad").unwrap_err());
        assert!(e.contains("bad/container.json"), "{e}");
    }
}
