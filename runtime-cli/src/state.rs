//! Per-container state under `--root`: `<root>/<id>/state.json`, and a lock.
//!
//! The lock is an `flock` on the container directory itself, so nothing but the
//! directory is left to remove on delete. `create` makes the directory with `mkdir`
//! (atomic: a second create of the same id fails), locks it and writes the state; every
//! other verb opens the directory, locks it and then checks that `state.json` is still
//! there (a concurrent delete may have removed it while this call waited).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default `--root`.
pub const DEFAULT_ROOT: &str = "/run/runv";
const STATE_FILE: &str = "state.json";
/// The state root when runv makes it: only root may enter (runc's root is 0700 too).
pub const ROOT_MODE: u32 = 0o700;
/// A container's directory: traversable, not listable (runc's 0711).
pub const CONTAINER_DIR_MODE: u32 = 0o711;
const STATE_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// runc's text; containerd matches "does not exist".
    #[error("container does not exist")]
    NotFound { id: String },
    /// runc's text.
    #[error("container with given ID already exists")]
    Exists { id: String },
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// runc's rule: `^[\w+-\.]+$`, and not `.` or `..`.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let bad = |reason| StateError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id == "." || id == ".." {
        return Err(bad("'.' and '..' are not ids"));
    }
    if id.len() > 1024 {
        return Err(bad("longer than 1024 bytes"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return Err(bad(
            "only letters, digits, '_', '+', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

/// The status as runc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// A process on the host: its PID and its start time (field 22 of /proc/PID/stat), so
/// that a recycled PID is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProcess {
    pub pid: i32,
    pub start_time: u64,
}

impl HostProcess {
    /// Records a live process.
    pub fn of(pid: i32) -> Option<Self> {
        start_time(pid).map(|start_time| HostProcess { pid, start_time })
    }

    /// True while the process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        match read_stat(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// (state letter, start time) from /proc/PID/stat.
fn read_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, s)| s)
}

/// The sandbox's network namespace, as the spec gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Netns {
    /// No network namespace in the spec: the caller's. No NIC.
    #[default]
    Host,
    /// The spec's path (a CNI namespace): final when the container is created.
    Join(PathBuf),
    /// A network namespace without path: the init's shim makes it, and the engine may
    /// configure it until `start` (Docker's setkey hook, `ctr run --cni`).
    New,
}

impl Netns {
    /// The namespace file of this sandbox, given a live process in it (the init's
    /// shim before the VM exists, runv-vmm after).
    pub fn path(&self, member_pid: i32) -> Option<PathBuf> {
        match self {
            Netns::Host => None,
            Netns::Join(p) => Some(p.clone()),
            Netns::New => Some(PathBuf::from(format!("/proc/{member_pid}/ns/net"))),
        }
    }

    /// Whether the namespace is final when the container is created, so the VM (whose
    /// NICs must exist at boot) can boot then; otherwise it boots at `start`.
    pub fn final_at_create(&self) -> bool {
        !matches!(self, Netns::New)
    }
}

/// One exec'd process's shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRecord {
    pub exec_id: String,
    pub shim: HostProcess,
}

/// A bind mount made under the share directory (undone on delete).
pub type MountRecord = PathBuf;

/// Everything runv keeps about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    /// Absolute bundle directory.
    pub bundle: PathBuf,
    /// Absolute rootfs path on the host (for `state`/`list` output).
    pub rootfs: PathBuf,
    /// The init's shim (`pid` in OCI state, `--pid-file`).
    pub init: Option<HostProcess>,
    /// The sandbox's runv-vmm; `None` until the VM boots (at `start` when the network
    /// namespace is not final at create).
    pub vmm: Option<HostProcess>,
    /// created, running or paused as last set by a verb; `stopped` is derived.
    pub status: Status,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub execs: Vec<ExecRecord>,
    /// Next free stdio port in the sandbox.
    pub next_port: u32,
    /// Host cgroup directories made for the sandbox.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// Bind mounts under the share directory, in the order made.
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
    /// The owner of the container (as runc: the bundle's owner name, informational).
    #[serde(default)]
    pub owner: String,
    /// The spec's hooks (poststop runs at delete, when the bundle may be gone).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The spec's process (the base of `exec` processes, as runc's).
    #[serde(default)]
    pub process: Option<oci_spec::runtime::Process>,
    /// The network namespace shims join (None: the caller's).
    #[serde(default)]
    pub shim_netns: Option<PathBuf>,
    /// The sandbox's network namespace.
    #[serde(default)]
    pub netns: Netns,
    /// The interfaces runv attached a tap to (their ingress qdisc is runv's to remove).
    #[serde(default)]
    pub net_links: Vec<String>,
}

/// First stdio port of a sandbox (the agent's control port is 1024).
pub const FIRST_STDIO_PORT: u32 = 2000;

impl State {
    /// Allocates `n` consecutive stdio ports.
    pub fn take_ports(&mut self, n: u32) -> u32 {
        let first = self.next_port.max(FIRST_STDIO_PORT);
        self.next_port = first + n;
        first
    }
}

/// The `--root` directory.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

/// A locked container directory. The lock is released when this is dropped.
#[derive(Debug)]
pub struct Locked {
    pub id: String,
    pub dir: PathBuf,
    _lock: File,
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Root { path: path.into() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Makes and locks a new container directory, mode 0711 as runc's. The root, and
    /// any directory above it runv has to make, is made 0700 (as runc makes its root);
    /// a root that already exists keeps its mode (docs/security.md).
    pub fn create(&self, id: &str) -> Result<Locked, StateError> {
        validate_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(ROOT_MODE)
            .create(&self.path)
            .map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            })?;
        let dir = self.dir(id);
        match std::fs::DirBuilder::new()
            .mode(CONTAINER_DIR_MODE)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists { id: id.into() })
            }
            Err(source) => return Err(StateError::Io { path: dir, source }),
        }
        let lock = lock_dir(&dir)
            .and_then(|f| {
                // Exactly 0711 whatever the umask: traversable, not listable.
                f.set_permissions(std::fs::Permissions::from_mode(CONTAINER_DIR_MODE))
                    .map_err(|source| StateError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                Ok(f)
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_dir(&dir);
            })?;
        Ok(Locked {
            id: id.into(),
            dir,
            _lock: lock,
        })
    }

    /// Opens and locks an existing container (blocking while another runv holds it).
    pub fn open(&self, id: &str) -> Result<(Locked, State), StateError> {
        validate_id(id).map_err(|_| StateError::NotFound { id: id.into() })?;
        let dir = self.dir(id);
        let lock = match lock_dir(&dir) {
            Ok(l) => l,
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound { id: id.into() })
            }
            Err(e) => return Err(e),
        };
        let locked = Locked {
            id: id.into(),
            dir,
            _lock: lock,
        };
        let state = locked.load()?;
        Ok((locked, state))
    }

    /// Container ids with a state file, sorted.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join(STATE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn lock_dir(dir: &Path) -> Result<File, StateError> {
    let f = File::open(dir).map_err(|source| StateError::Io {
        path: dir.into(),
        source,
    })?;
    // SAFETY: flock on an fd this function owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(StateError::Io {
            path: dir.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(f)
}

impl Locked {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn load(&self) -> Result<State, StateError> {
        let path = self.state_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound {
                    id: self.id.clone(),
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes the state atomically (temp file + rename), 0600: it holds the spec's
    /// process, whose environment may carry secrets.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.state_path();
        let body = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_private(&path, &body)
    }

    /// Removes the container directory and everything in it.
    pub fn remove(self) -> Result<(), StateError> {
        std::fs::remove_dir_all(&self.dir).map_err(|source| StateError::Io {
            path: self.dir.clone(),
            source,
        })
    }
}

/// Writes `body` to `path` atomically (a `.NAME.tmp` beside it, fsync, rename), mode
/// 0600 whatever the umask: the files runv keeps a sandbox's secrets in.
pub fn write_private(path: &Path, body: &[u8]) -> Result<(), StateError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let io = |source| StateError::Io {
        path: tmp.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(STATE_FILE_MODE)
        .open(&tmp)
        .map_err(io)?;
    // A temporary file left by a crash keeps its mode through `open`.
    f.set_permissions(std::fs::Permissions::from_mode(STATE_FILE_MODE))
        .map_err(io)?;
    f.write_all(body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|source| StateError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> State {
        State {
            id: id.into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            init: None,
            vmm: None,
            status: Status::Created,
            created: "2026-01-01T00:00:00Z".into(),
            annotations: Default::default(),
            execs: vec![],
            next_port: 0,
            cgroup_dirs: vec![],
            mounts: vec![],
            owner: String::new(),
            hooks: None,
            process: None,
            shim_netns: None,
            netns: Netns::Host,
            net_links: vec![],
        }
    }

    #[test]
    fn ids_follow_runc() {
        for ok in ["a", "c1", "a.b_c+d-e", "0123"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", "a\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_save_open_remove() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path().join("root"));
        let l = root.create("c1").unwrap();
        let mut s = sample("c1");
        assert_eq!(s.take_ports(3), FIRST_STDIO_PORT);
        assert_eq!(s.take_ports(2), FIRST_STDIO_PORT + 3);
        l.save(&s).unwrap();
        drop(l);
        assert_eq!(
            root.create("c1").unwrap_err().to_string(),
            "container with given ID already exists"
        );
        let (l, back) = root.open("c1").unwrap();
        assert_eq!(back, s);
        assert_eq!(root.list().unwrap(), vec!["c1".to_string()]);
        l.remove().unwrap();
        assert_eq!(
            root.open("c1").unwrap_err().to_string(),
            "container does not exist"
        );
        assert!(root.list().unwrap().is_empty());
        assert!(matches!(
            root.open("../etc").unwrap_err(),
            StateError::NotFound { .. }
        ));
    }

    #[test]
    fn a_directory_without_state_is_not_a_container() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let l = root.create("half").unwrap();
        drop(l);
        assert!(matches!(
            root.open("half").unwrap_err(),
            StateError::NotFound { .. }
        ));
        assert!(root.list().unwrap().is_empty());
    }

    #[test]
    fn the_lock_serializes_callers() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let l = root.create("c").unwrap();
        l.save(&sample("c")).unwrap();
        let root2 = root.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let r = root2.open("c").map(|_| ());
            tx.send(r.is_ok()).unwrap();
        });
        // The other caller blocks while the lock is held...
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        // ...and finds the container gone once the holder deleted it.
        l.remove().unwrap();
        assert!(!rx.recv().unwrap());
        h.join().unwrap();
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_root_runv_makes_is_private_and_container_dirs_are_0711() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path().join("a/root"));
        let l = root.create("c1").unwrap();
        l.save(&sample("c1")).unwrap();
        assert_eq!(mode(&root.path), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700, "made by runv too");
        assert_eq!(mode(&l.dir), 0o711);
        assert_eq!(
            mode(&l.state_path()),
            0o600,
            "the state holds the process's env"
        );
    }

    #[test]
    fn an_existing_root_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o751)).unwrap();
        let root = Root::new(t.path());
        root.create("c1").unwrap();
        assert_eq!(mode(t.path()), 0o751);
        assert_eq!(mode(&root.dir("c1")), 0o711);
    }

    #[test]
    #[ignore = "needs root: setpriv to act as nobody"]
    fn root_an_unprivileged_user_cannot_reach_the_state() {
        use std::os::unix::fs::PermissionsExt;
        let nobody = |args: &[&std::ffi::OsStr]| {
            std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .args(args)
                .output()
                .expect("setpriv (util-linux)")
        };
        let t = tempfile::tempdir().unwrap();
        // Only runv's modes count: the temporary directory is open to everyone.
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Root::new(t.path().join("root"));
        let l = root.create("c1").unwrap();
        l.save(&sample("c1")).unwrap();
        let o = nobody(&["ls".as_ref(), root.path.as_os_str()]);
        assert!(!o.status.success(), "nobody listed the root: {o:?}");
        let o = nobody(&["ls".as_ref(), l.dir.as_os_str()]);
        assert!(!o.status.success(), "nobody listed the container: {o:?}");
        // A root that already existed, wide open: the container's files stay private.
        std::fs::set_permissions(&root.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let o = nobody(&["ls".as_ref(), l.dir.as_os_str()]);
        assert!(!o.status.success(), "nobody listed the container: {o:?}");
        let o = nobody(&["cat".as_ref(), l.state_path().as_os_str()]);
        assert!(!o.status.success(), "nobody read state.json: {o:?}");
    }

    #[test]
    fn host_process_liveness() {
        let me = HostProcess::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let recycled = HostProcess {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let p = HostProcess::of(child.id() as i32);
        child.wait().unwrap();
        if let Some(p) = p {
            assert!(!p.alive());
        }
    }
}
