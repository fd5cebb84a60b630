//! Containers and their processes, built with youki's libcontainer.
//!
//! Each container has a bundle directory (`<state>/bundles/<id>/config.json`, the spec
//! with `root.path` made absolute) and libcontainer's own state under
//! `<state>/containers/<id>`. Processes are watched by the [`Reaper`]; an exit is
//! *reported* (to `wait_process`, `state`) once the output is drained.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcontainer::container::Container;
use libcontainer::signal::Signal;
use oci_spec::runtime::{Process, Spec};
use runv_agent_protocol::{
    ContainerInfo, ContainerStatus, ErrorCode, ErrorResponse, ExitStatus, Response, ShareLocation,
    StdioPorts,
};

use crate::builder::{self, BuildError, Builder, Kind};
use crate::reaper::{lock, Once, ProcessHandle, Reaper, SignalError};
use crate::stdio::{self, Relay, DRAIN_GRACE};
use crate::transport::StdioConnector;
use crate::validate;

type Result<T> = std::result::Result<T, ErrorResponse>;

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(code, message)
}

/// Where things live; set from the command line.
#[derive(Debug, Clone)]
pub struct Paths {
    /// libcontainer's state root and our bundles.
    pub state: PathBuf,
    /// Where share tags are mounted (`/run/runv/shares` in the guest).
    pub shares: PathBuf,
    /// Where the agent writes a container's `net.*` sysctls itself (`/proc/sys` in the
    /// guest, whose network namespace is the container's); None leaves them to
    /// libcontainer (which refuses them without a network namespace in the spec).
    pub net_sysctls: Option<PathBuf>,
}

/// One process of a container (its init, or an exec).
pub struct Proc {
    pub pid: i32,
    relay: Relay,
    /// Set when the exit is known *and* the output drained (or the grace ran out).
    reported: Arc<Once<ExitStatus>>,
    /// Every signal goes through it: never to the PID once the process is reaped.
    handle: Arc<ProcessHandle>,
}

impl Proc {
    fn new(pid: i32, relay: Relay, exit: Arc<Once<ExitStatus>>, reaper: &Reaper) -> Self {
        let handle = Arc::new(reaper.handle(pid, &exit));
        let reported = Arc::new(Once::default());
        let (r, drain, h) = (reported.clone(), relay.drain.clone(), handle.clone());
        let _ = std::thread::Builder::new()
            .name(format!("exit-{pid}"))
            .spawn(move || {
                let status = exit.wait();
                // Reaped: the pidfd has nothing left to reach.
                h.release();
                if !drain.wait(DRAIN_GRACE) {
                    tracing::info!(
                        pid,
                        "output still open {DRAIN_GRACE:?} after exit; reporting the exit"
                    );
                }
                r.set(status);
            });
        Proc {
            pid,
            relay,
            reported,
            handle,
        }
    }

    /// Sends `signal` to this process, never to another that got its PID later.
    fn signal(&self, reaper: &Reaper, signal: i32) -> std::result::Result<(), SignalError> {
        self.handle.signal(reaper, signal)
    }
}

struct Entry {
    container: Container,
    bundle: PathBuf,
    init: Arc<Proc>,
    execs: HashMap<String, Arc<Proc>>,
    started: bool,
}

pub struct Manager {
    paths: Paths,
    connector: StdioConnector,
    builder: Builder,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Entry>>,
    seq: std::sync::atomic::AtomicU64,
}

fn check_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ErrorResponse::field(
            ErrorCode::InvalidArgument,
            field,
            format!("{field} {id:?}: use 1 to 128 of [A-Za-z0-9_.-], not starting with '.'"),
        ))
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ErrorResponse {
    err(ErrorCode::Internal, format!("{what}: {e}"))
}

impl Manager {
    pub fn new(
        paths: Paths,
        connector: StdioConnector,
        reaper: Arc<Reaper>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(paths.state.join("containers"))?;
        std::fs::create_dir_all(paths.state.join("bundles"))?;
        Ok(Manager {
            paths,
            connector,
            builder: Builder::new(reaper.clone()),
            reaper,
            containers: Mutex::new(HashMap::new()),
            seq: Default::default(),
        })
    }

    fn lc_root(&self) -> PathBuf {
        self.paths.state.join("containers")
    }

    fn console_path(&self) -> PathBuf {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.paths.state.join(format!("console-{n}.sock"))
    }

    fn rootfs_path(&self, loc: &ShareLocation) -> Result<PathBuf> {
        loc.validate().map_err(|e| {
            ErrorResponse::field(ErrorCode::InvalidArgument, "rootfs", format!("rootfs: {e}"))
        })?;
        let share = self.paths.shares.join(&loc.tag);
        loc.host_path(&share).map_err(|e| {
            ErrorResponse::field(ErrorCode::InvalidArgument, "rootfs", format!("rootfs: {e}"))
        })
    }

    pub fn create(
        &self,
        id: &str,
        mut spec: Spec,
        rootfs: &ShareLocation,
        ports: &StdioPorts,
    ) -> Result<Response> {
        check_id("container_id", id)?;
        if lock(&self.containers).contains_key(id) {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("container {id:?} already exists"),
            ));
        }
        let root = self.rootfs_path(rootfs)?;
        validate::check_spec(&spec, &root)?;
        if let Some(proc_sys) = &self.paths.net_sysctls {
            crate::sysctl::apply_net(&mut spec, proc_sys)?;
        }
        let mut r = spec.root().clone().unwrap_or_default();
        r.set_path(root.clone());
        spec.set_root(Some(r));
        // Without a cgroupsPath libcontainer would pick a systemd-style name.
        let mut linux = spec.linux().clone().unwrap_or_default();
        if linux.cgroups_path().is_none() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/runv/{id}"))));
        }
        spec.set_linux(Some(linux));
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);

        let bundle = self.paths.state.join("bundles").join(id);
        let _ = std::fs::remove_dir_all(&bundle);
        let _ = std::fs::remove_dir_all(self.lc_root().join(id));
        std::fs::create_dir_all(&bundle)
            .map_err(|e| internal(&format!("creating {}", bundle.display()), e))?;
        spec.save(bundle.join("config.json"))
            .map_err(|e| internal("writing config.json", e))?;

        let built = self
            .spawn(
                id,
                Kind::Init {
                    bundle: bundle.clone(),
                },
                terminal,
                ports,
            )
            .and_then(|(pid, exit, relay)| {
                Container::load(self.lc_root().join(id))
                    .map(|c| (c, pid, exit, relay))
                    .map_err(|e| internal("loading the container's state", e))
            });
        let (container, pid, exit, relay) = match built {
            Ok(b) => b,
            Err(mut e) => {
                let _ = std::fs::remove_dir_all(&bundle);
                let _ = std::fs::remove_dir_all(self.lc_root().join(id));
                e.message = format!("creating container {id:?}: {}", e.message);
                return Err(e);
            }
        };
        tracing::info!(id, pid, "container created");
        let init = Arc::new(Proc::new(pid, relay, exit, &self.reaper));
        lock(&self.containers).insert(
            id.to_string(),
            Entry {
                container,
                bundle,
                init,
                execs: HashMap::new(),
                started: false,
            },
        );
        Ok(Response::Created { pid: pid as u32 })
    }

    /// Connects a process's stdio and has the builder process create it (builder.rs).
    fn spawn(
        &self,
        id: &str,
        kind: Kind,
        terminal: bool,
        ports: &StdioPorts,
    ) -> Result<(i32, Arc<Once<ExitStatus>>, Relay)> {
        let (child, relay) = stdio::prepare(&self.connector, ports, terminal, &self.console_path())
            .map_err(|e| {
                ErrorResponse::field(ErrorCode::InvalidArgument, "stdio", e.to_string())
            })?;
        let console = child.console;
        let fds = builder::Stdio {
            stdin: child.stdin,
            stdout: child.stdout,
            stderr: child.stderr,
        };
        let console_path = console.as_ref().map(|c| c.path.clone());
        let (pid, exit) = self
            .builder
            .build(id, self.lc_root(), console_path, kind, fds)
            .map_err(|e| match e {
                BuildError::Refused(m) => err(ErrorCode::InvalidArgument, m),
                other => err(ErrorCode::Internal, other.to_string()),
            })?;
        if let Some(console) = console {
            console
                .finish(&relay)
                .map_err(|e| internal("terminal", e))?;
        }
        Ok((pid, exit, relay))
    }

    fn with_entry<T>(&self, id: &str, f: impl FnOnce(&mut Entry) -> Result<T>) -> Result<T> {
        let mut map = lock(&self.containers);
        let entry = map
            .get_mut(id)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id:?}")))?;
        f(entry)
    }

    pub fn start(&self, id: &str) -> Result<Response> {
        self.with_entry(id, |e| {
            if e.started {
                return Err(err(
                    ErrorCode::InvalidState,
                    format!("container {id:?} was already started"),
                ));
            }
            e.container
                .start()
                .map_err(|x| internal(&format!("starting {id:?}"), x))?;
            e.started = true;
            Ok(Response::Ok)
        })
    }

    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &Process,
        ports: &StdioPorts,
    ) -> Result<Response> {
        check_id("exec_id", exec_id)?;
        let (bundle, root, mounts) = self.with_entry(id, |e| {
            if e.execs.contains_key(exec_id) {
                return Err(err(
                    ErrorCode::AlreadyExists,
                    format!("exec {exec_id:?} exists in {id:?}"),
                ));
            }
            if !e.started || e.init.reported.get().is_some() || e.init.pid == 0 {
                return Err(err(
                    ErrorCode::InvalidState,
                    format!("container {id:?} is not running"),
                ));
            }
            let spec = Spec::load(e.bundle.join("config.json"))
                .map_err(|x| internal("reading config.json", x))?;
            let root = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .unwrap_or_default();
            let mounts: Vec<PathBuf> = spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().clone())
                .collect();
            Ok((e.bundle.clone(), root, mounts))
        })?;
        validate::check_process(process, &root, &mounts)?;
        let process = without_lsm(process, id, exec_id);
        let process_file = bundle.join(format!("exec-{exec_id}.json"));
        let json = serde_json::to_vec(&process).map_err(|x| internal("encoding the process", x))?;
        std::fs::write(&process_file, json).map_err(|x| internal("writing the process", x))?;
        let terminal = process.terminal().unwrap_or(false);
        let built = self.spawn(
            id,
            Kind::Tenant {
                process_file: process_file.clone(),
            },
            terminal,
            ports,
        );
        let _ = std::fs::remove_file(&process_file);
        let (pid, exit, relay) = built.map_err(|mut e| {
            e.message = format!("exec {exec_id:?} in {id:?}: {}", e.message);
            e
        })?;
        let proc = Arc::new(Proc::new(pid, relay, exit, &self.reaper));
        self.with_entry(id, |e| {
            e.execs.insert(exec_id.to_string(), proc);
            Ok(())
        })?;
        Ok(Response::Started { pid: pid as u32 })
    }

    fn proc(&self, id: &str, exec_id: Option<&str>) -> Result<Arc<Proc>> {
        self.with_entry(id, |e| match exec_id {
            None => Ok(e.init.clone()),
            Some(x) => e.execs.get(x).cloned().ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!("no exec {x:?} in container {id:?}"),
                )
            }),
        })
    }

    pub fn signal(
        &self,
        id: &str,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<Response> {
        let sig = Signal::try_from(signal).map_err(|_| {
            ErrorResponse::field(
                ErrorCode::InvalidArgument,
                "signal",
                format!("signal {signal}: not a signal"),
            )
        })?;
        if all {
            if exec_id.is_some() {
                return Err(ErrorResponse::field(
                    ErrorCode::InvalidArgument,
                    "all",
                    "all: only without exec_id",
                ));
            }
            return self.with_entry(id, |e| {
                e.container
                    .kill(sig, true)
                    .map_err(|x| internal(&format!("signalling {id:?}"), x))?;
                Ok(Response::Ok)
            });
        }
        let p = self.proc(id, exec_id)?;
        match p.signal(&self.reaper, signal) {
            Ok(()) => Ok(Response::Ok),
            // Reaped: its PID may be another process's by now.
            Err(SignalError::Exited { pid }) => Err(err(
                ErrorCode::InvalidState,
                format!("process {pid} of {id:?} has exited"),
            )),
            Err(e) => Err(internal(&format!("signalling {id:?}"), e)),
        }
    }

    /// Blocks until the process's exit is reported. Holds no lock while waiting. With a
    /// `lifeline` (the waiting connection's fd), the process is SIGKILLed when the
    /// connection hangs up first: a host shim that dies takes its process along.
    pub fn wait(
        &self,
        id: &str,
        exec_id: Option<&str>,
        lifeline: Option<RawFd>,
    ) -> Result<Response> {
        let p = self.proc(id, exec_id)?;
        if let Some(fd) = lifeline {
            loop {
                if let Some(status) = p.reported.wait_timeout(LIFELINE_POLL) {
                    return Ok(Response::Exited { status });
                }
                if hung_up(fd) {
                    tracing::info!(id, pid = p.pid, "the waiting connection closed; killing");
                    if let Err(e) = p.signal(&self.reaper, libc::SIGKILL) {
                        tracing::debug!(id, "{e}");
                    }
                    break;
                }
            }
        }
        Ok(Response::Exited {
            status: p.reported.wait(),
        })
    }

    pub fn state(&self, id: &str) -> Result<Response> {
        self.with_entry(id, |e| {
            let exit = e.init.reported.get();
            let status = match (exit, e.started) {
                (Some(_), _) => ContainerStatus::Stopped,
                (None, false) => ContainerStatus::Created,
                (None, true) => {
                    let _ = e.container.refresh_status();
                    if e.container.status() == libcontainer::container::ContainerStatus::Paused {
                        ContainerStatus::Paused
                    } else {
                        ContainerStatus::Running
                    }
                }
            };
            let pid = exit.is_none().then_some(e.init.pid as u32);
            Ok(Response::State {
                state: ContainerInfo {
                    id: id.to_string(),
                    status,
                    pid,
                    exit,
                },
            })
        })
    }

    pub fn list(&self, id: &str) -> Result<Response> {
        self.with_entry(id, |e| {
            let cgroup = crate::cgroup::dir(&e.bundle);
            let mut pids = cgroup
                .and_then(|d| crate::cgroup::procs(&d))
                .unwrap_or_default();
            if pids.is_empty() {
                pids = std::iter::once(&e.init)
                    .chain(e.execs.values())
                    .filter(|p| p.reported.get().is_none())
                    .map(|p| p.pid as u32)
                    .collect();
            }
            let processes = crate::procinfo::read_all(std::path::Path::new("/proc"), &pids);
            Ok(Response::Processes { pids, processes })
        })
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: Option<&str>,
        rows: u16,
        cols: u16,
    ) -> Result<Response> {
        let p = self.proc(id, exec_id)?;
        p.relay.resize(rows, cols).map_err(|e| {
            err(
                ErrorCode::InvalidState,
                format!("resizing the terminal of {id:?}: {e}"),
            )
        })?;
        Ok(Response::Ok)
    }

    pub fn close_stdin(&self, id: &str, exec_id: Option<&str>) -> Result<Response> {
        self.proc(id, exec_id)?.relay.close_stdin();
        Ok(Response::Ok)
    }

    pub fn stats(&self, id: &str) -> Result<Response> {
        let bundle = self.with_entry(id, |e| Ok(e.bundle.clone()))?;
        let dir = crate::cgroup::dir(&bundle).ok_or_else(|| {
            err(
                ErrorCode::Unsupported,
                format!("container {id:?}: no cgroup v2 directory"),
            )
        })?;
        Ok(Response::Stats {
            stats: crate::cgroup::stats(&dir),
        })
    }

    pub fn pause(&self, id: &str, pause: bool) -> Result<Response> {
        self.with_entry(id, |e| {
            let r = if pause {
                e.container.pause()
            } else {
                e.container.resume()
            };
            r.map_err(|x| {
                err(
                    ErrorCode::InvalidState,
                    format!("{} {id:?}: {x}", if pause { "pausing" } else { "resuming" }),
                )
            })?;
            Ok(Response::Ok)
        })
    }

    pub fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<Response> {
        let bundle = self.with_entry(id, |e| Ok(e.bundle.clone()))?;
        let dir = crate::cgroup::dir(&bundle).ok_or_else(|| {
            err(
                ErrorCode::Unsupported,
                format!("container {id:?}: no cgroup v2 directory"),
            )
        })?;
        crate::cgroup::update(&dir, resources)?;
        Ok(Response::Ok)
    }

    pub fn destroy(&self, id: &str) -> Result<Response> {
        let mut entry = lock(&self.containers)
            .remove(id)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no container {id:?}")))?;
        let _ = entry.container.refresh_status();
        if let Err(e) = entry.container.delete(true) {
            tracing::warn!(id, "libcontainer delete: {e}");
        }
        for p in std::iter::once(&entry.init).chain(entry.execs.values()) {
            // Refused (and harmless) for a process already reaped.
            let _ = p.signal(&self.reaper, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&entry.bundle);
        let _ = std::fs::remove_dir_all(self.lc_root().join(id));
        Ok(Response::Ok)
    }

    /// Kills every container (agent shutdown).
    pub fn destroy_all(&self) {
        let ids: Vec<String> = lock(&self.containers).keys().cloned().collect();
        for id in ids {
            let _ = self.destroy(&id);
        }
    }
}

/// `process` without its LSM fields: the guest kernel has no LSM, and libcontainer
/// fails on an AppArmor profile or SELinux label it cannot apply. The host drops them
/// from the container's spec (runv's rewrite); an exec'd process arrives as the engine
/// made it (Docker's carries `apparmorProfile`), so they are dropped here, logged once.
fn without_lsm(process: &Process, id: &str, exec_id: &str) -> Process {
    let mut p = process.clone();
    let profile = p.apparmor_profile().clone();
    let label = p.selinux_label().clone();
    p.set_apparmor_profile(None);
    p.set_selinux_label(None);
    if profile.is_some() || label.is_some() {
        tracing::info!(
            id,
            exec_id,
            ?profile,
            ?label,
            "ignoring the process's LSM fields: the guest has no LSM"
        );
    }
    p
}

/// How often a `kill_on_close` wait looks at its connection.
const LIFELINE_POLL: Duration = Duration::from_millis(100);

/// Whether the peer of a connected socket hung up (or the socket failed).
fn hung_up(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll reads and writes only the one pollfd we pass; a zero timeout
    // returns at once.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The bundle's spec path, for the cgroup module.
pub fn bundle_spec(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}
