//! A sandbox of one container: create (share, shim, hooks, then the VM when the network
//! namespace is final: [`boot`]) and tear down. Every failure of `create` undoes what
//! was made, in reverse: VMM killed and reaped, runv's tc filters removed, shim killed,
//! mounts unmounted, cgroups and the state directory removed.

pub mod boot;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use runv_agent_protocol::Request;

use crate::agent::{self, AgentError};
use crate::config::RuntimeConfig;
use crate::hooks::{run_hooks, HookError};
use crate::oci::hook_state;
use crate::rewrite::{rewrite_spec_for_guest, RewriteError, ShareTarget};
use crate::shim::{self, Shim, ShimError, ShimNetns, ShimSpec, TtyMode};
use crate::state::{HostProcess, Locked, Netns, Root, State, StateError, Status};
use crate::vmm::{self, SHARE_TAG};
use crate::{cgroups, dns_relay, network, share, sizing};
use boot::{BootPlan, Booted};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("bundle {}: {reason}", bundle.display())]
    Bundle { bundle: PathBuf, reason: String },
    #[error("{}: invalid config: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(&'static str),
    #[error(transparent)]
    Sizing(#[from] sizing::SizingError),
    #[error("{}: invalid config: {source}", path.display())]
    SpecCheck {
        path: PathBuf,
        source: crate::speccheck::SpecCheckError,
    },
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    #[error(transparent)]
    Share(#[from] share::ShareError),
    #[error(transparent)]
    Cgroup(#[from] cgroups::CgroupError),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
    #[error("the sandbox VM did not come up: {source}{details}")]
    Boot { source: AgentError, details: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Shim(#[from] ShimError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error("{}: {reason}", path.display())]
    Plan { path: PathBuf, reason: String },
    #[error("the container's runv-shim is gone: the container stopped before its VM booted")]
    ShimGone,
}

/// What `create` needs beyond the bundle.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    /// `run` in the foreground: a terminal without a console socket uses runv's own.
    pub foreground: bool,
    pub config: RuntimeConfig,
    pub shim_exe: PathBuf,
    pub log: Option<PathBuf>,
    pub log_json: bool,
    pub debug: bool,
}

/// A created container: the state is saved, the shim is running.
pub struct Created {
    pub locked: Locked,
    pub state: State,
    pub shim: Shim,
    pub warnings: Vec<String>,
}

/// The VMM's hybrid vsock socket of a container directory. It has a directory of its
/// own (with the shims' `<socket>_<port>` listeners): the one part of the container
/// directory the jailed VMM sees writable, so it cannot touch state.json.
pub fn vsock_path(dir: &Path) -> PathBuf {
    dir.join("vsock").join("v.sock")
}

/// Where a container's shims log when runv has no `--log`.
pub fn shim_log(dir: &Path, log: Option<&Path>) -> PathBuf {
    log.map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("shim.log"))
}

/// Reads and parses `<bundle>/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec, SandboxError> {
    if !bundle.is_dir() {
        return Err(SandboxError::Bundle {
            bundle: bundle.into(),
            reason: "not a directory".into(),
        });
    }
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| SandboxError::Bundle {
        bundle: bundle.into(),
        reason: format!("reading config.json: {e}"),
    })?;
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| SandboxError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let process = spec.process().as_ref().ok_or(SandboxError::Config {
        path: path.clone(),
        reason: "process: missing".into(),
    })?;
    if process.args().as_ref().map_or(true, |a| a.is_empty()) {
        return Err(SandboxError::Config {
            path,
            reason: "process.args: must not be empty".into(),
        });
    }
    Ok(spec)
}

/// The terminal handling runc would choose, or its error.
pub fn tty_mode(
    terminal: bool,
    console_socket: Option<&Path>,
    foreground: bool,
) -> Result<TtyMode, SandboxError> {
    match (terminal, console_socket) {
        (true, Some(p)) => Ok(TtyMode::ConsoleSocket(p.into())),
        (true, None) if foreground => Ok(TtyMode::Inherit),
        (true, None) => Err(SandboxError::Usage(
            "cannot allocate tty if runc will detach without setting console socket",
        )),
        (false, Some(_)) => Err(SandboxError::Usage(
            "cannot use console socket if runc will not detach or allocate tty",
        )),
        (false, None) => Ok(TtyMode::None),
    }
}

/// The network namespace of the sandbox's host processes.
pub fn netns_of(spec: &Spec) -> Netns {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .cloned()
        });
    match ns {
        None => Netns::Host,
        Some(n) => match n.path() {
            Some(p) => Netns::Join(p.clone()),
            None => Netns::New,
        },
    }
}

/// What create made so far; `rollback` undoes it.
struct Undo {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
    cgroups: Vec<PathBuf>,
    vmm: Option<Child>,
    /// The state once the VM booted: its network is undone through it.
    booted: Option<State>,
    shim: Option<Shim>,
}

impl Undo {
    fn rollback(mut self) {
        if let Some(state) = self.booted.take() {
            for w in boot::detach_network(&state) {
                tracing::warn!("{w}");
            }
        }
        if let Some(mut v) = self.vmm.take() {
            let _ = v.kill();
            let _ = v.wait();
        }
        if let Some(s) = self.shim.take() {
            s.abort();
        }
        for w in share::unmount_all(&self.mounts) {
            tracing::warn!("{w}");
        }
        for w in cgroups::remove(&self.cgroups) {
            tracing::warn!("{w}");
        }
        if let Err(e) = share::remove_state_dir(&self.dir) {
            tracing::error!("cleaning up after a failed create: {e}");
        }
    }
}

/// Creates the container `opts.id` from its bundle.
pub fn create(root: &Root, opts: &CreateOptions) -> Result<Created, SandboxError> {
    let bundle = std::path::absolute(&opts.bundle).unwrap_or_else(|_| opts.bundle.clone());
    let spec = load_spec(&bundle)?;
    crate::speccheck::check(&spec).map_err(|source| SandboxError::SpecCheck {
        path: bundle.join("config.json"),
        source,
    })?;
    let process = spec.process().clone().unwrap_or_default();
    let tty = tty_mode(
        process.terminal().unwrap_or(false),
        opts.console_socket.as_deref(),
        opts.foreground,
    )?;
    let size = sizing::size_for(
        &spec,
        opts.config.default_cpus,
        opts.config.default_memory_mib,
        sizing::host_cpus(),
    )?;
    crate::state::validate_id(&opts.id)?;
    // Without a cgroupsPath the sandbox still gets a host cgroup of its own (its host
    // bounds live there): runv/<id>.
    let cgroup_rel = cgroups::relative_path(
        &spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map_or_else(|| format!("/runv/{}", opts.id), |p| p.display().to_string()),
    )?;
    let locked = root.create(&opts.id)?;
    let mut undo = Undo {
        dir: locked.dir.clone(),
        mounts: vec![],
        cgroups: vec![],
        vmm: None,
        booted: None,
        shim: None,
    };
    let mut warnings = Vec::new();
    match build(
        root,
        opts,
        &locked,
        &bundle,
        &spec,
        tty,
        size,
        cgroup_rel,
        &mut undo,
        &mut warnings,
    ) {
        Ok((state, shim)) => Ok(Created {
            locked,
            state,
            shim,
            warnings,
        }),
        Err(e) => {
            undo.rollback();
            drop(locked);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    root: &Root,
    opts: &CreateOptions,
    locked: &Locked,
    bundle: &Path,
    spec: &Spec,
    tty: TtyMode,
    size: sizing::VmSize,
    cgroup_rel: PathBuf,
    undo: &mut Undo,
    warnings: &mut Vec<String>,
) -> Result<(State, Shim), SandboxError> {
    let _ = root;
    let dir = &locked.dir;
    let share_dir = dir.join("share");
    std::fs::create_dir(&share_dir).map_err(|e| SandboxError::Bundle {
        bundle: share_dir.clone(),
        reason: e.to_string(),
    })?;
    let rewritten = rewrite_spec_for_guest(
        spec,
        bundle,
        &ShareTarget {
            tag: SHARE_TAG.into(),
            container_dir: opts.id.clone(),
        },
    )?;
    share::arrange(&share_dir, &rewritten.layout.entries, &mut undo.mounts)?;

    let netns = netns_of(spec);
    let uds = vsock_path(dir);
    if let Some(vsock_dir) = uds.parent() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(vsock_dir)
            .map_err(|e| SandboxError::Bundle {
                bundle: vsock_dir.into(),
                reason: e.to_string(),
            })?;
    }
    let process = spec.process().clone();
    let terminal = process.as_ref().and_then(|p| p.terminal()).unwrap_or(false);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut state = State {
        id: opts.id.clone(),
        bundle: bundle.into(),
        rootfs: rewritten
            .layout
            .entries
            .first()
            .map(|e| e.host_path.clone())
            .unwrap_or_default(),
        init: None,
        vmm: None,
        status: Status::Created,
        created: now,
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        execs: vec![],
        next_port: 0,
        cgroup_dirs: vec![],
        mounts: undo.mounts.clone(),
        owner: "root".into(),
        hooks: rewritten.host.hooks.clone(),
        process: process.clone(),
        shim_netns: None,
        netns: netns.clone(),
        net_links: vec![],
    };
    let first = state.take_ports(if terminal { 2 } else { 3 });
    let (ports, _) = shim::ports_for(first, terminal)?;
    let boot_now = netns.final_at_create();
    let go_fifo = dir.join("go");
    if !boot_now {
        shim::make_fifo(&go_fifo)?;
    }
    // A resolver on the loopback of the sandbox's namespace (Docker's embedded DNS)
    // is relayed from the guest through the init's shim, which lives there; the
    // resolv.conf that names it may be written by a hook yet.
    let resolv_conf = match netns {
        Netns::Host => None,
        _ => dns_relay::resolv_conf_source(&rewritten.layout.entries),
    };
    let shim_spec = ShimSpec {
        uds: uds.clone(),
        container_id: opts.id.clone(),
        exec_id: None,
        ports,
        tty,
        log: shim_log(dir, opts.log.as_deref()),
        go_fifo: (!boot_now).then(|| go_fifo.clone()),
        dns_relay: resolv_conf.clone(),
        log_json: opts.log_json,
        debug: opts.debug,
    };
    // The init's shim first: it makes the sandbox's network namespace (or joins the
    // spec's), so the engine's hooks find it through the state's pid.
    let shim_netns = match &netns {
        Netns::Host => ShimNetns::Inherit,
        Netns::Join(p) => ShimNetns::Join(p),
        Netns::New => ShimNetns::New,
    };
    let shim = shim::spawn(&opts.shim_exe, &shim_spec, shim_netns)?;
    let shim_pid = shim.pid();
    undo.shim = Some(shim);
    state.init = HostProcess::of(shim_pid);
    let limits = cgroups::Limits {
        memory_bytes: (size.memory_mib + opts.config.host_memory_overhead_mib) << 20,
        pids: opts.config.host_pids_limit + u64::from(size.cpus),
    };
    let (dirs, w) = cgroups::place(
        &cgroups::host_hierarchies(),
        &cgroup_rel,
        &[shim_pid],
        limits,
    );
    undo.cgroups = dirs;
    warnings.extend(w);
    state.cgroup_dirs = undo.cgroups.clone();
    let plan = BootPlan {
        vmm: opts.config.vmm.clone(),
        kernel: opts.config.kernel.clone(),
        initrd: opts.config.initrd.clone(),
        cpus: size.cpus,
        memory_mib: size.memory_mib,
        console_limit: opts.config.console_limit,
        hostname: spec.hostname().clone().unwrap_or_else(|| opts.id.clone()),
        spec: rewritten.spec.clone(),
        rootfs: rewritten.rootfs.clone(),
        stdio: ports,
        resolv_conf,
    };
    locked.save(&state)?;

    // The create-time hooks, before the VM exists: Docker's libnetwork-setkey
    // (prestart) configures the namespace it finds at /proc/<state.pid>/ns/net.
    let hs = hook_state(&state, Status::Created);
    if let Some(h) = &rewritten.host.hooks {
        #[allow(deprecated)]
        let prestart = h.prestart().clone().unwrap_or_default();
        run_hooks("prestart", &prestart, &hs)?;
        run_hooks(
            "createRuntime",
            h.create_runtime().as_deref().unwrap_or_default(),
            &hs,
        )?;
        run_hooks(
            "createContainer",
            h.create_container().as_deref().unwrap_or_default(),
            &hs,
        )?;
    }
    let mut shim = undo.shim.take().expect("set above");
    let told = if boot_now {
        boot::boot(dir, &mut state, &plan).and_then(|Booted { vmm, warnings: w }| {
            warnings.extend(w);
            undo.vmm = Some(vmm);
            undo.booted = Some(state.clone());
            locked.save(&state)?;
            Ok(shim.go()?)
        })
    } else {
        plan.save(dir).and_then(|()| Ok(shim.defer()?))
    };
    if let Err(e) = told {
        undo.shim = Some(shim);
        return Err(e);
    }
    // The VMM now belongs to the state: it outlives this call.
    undo.vmm.take();
    undo.booted.take();
    Ok((state, shim))
}

/// The tails of the VMM's log and the guest console, for a boot failure.
fn boot_details(dir: &Path) -> String {
    let mut s = String::new();
    for (name, file) in [("runv-vmm", "vmm.log"), ("guest console", "console.log")] {
        let t = vmm::tail(&dir.join(file), 1500);
        if !t.is_empty() {
            s.push_str(&format!("\n--- {name} ---\n{t}"));
        }
    }
    s
}

/// The status, derived: `stopped` once the init's shim is gone.
pub fn status(state: &State) -> Status {
    match state.init {
        Some(p) if p.alive() => state.status,
        _ => Status::Stopped,
    }
}

/// How hard `destroy` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Ask the agent to power off, then kill the VMM if it does not.
    Graceful,
    /// Kill the VMM at once (`delete --force` of a wedged sandbox): its supervisor
    /// SIGKILLs it on SIGTERM, runv SIGKILLs a supervisor that does not end.
    Kill,
}

/// Tears the sandbox down and removes its state. Returns warnings (poststop hook
/// failures, mounts or cgroups that stayed).
pub fn destroy(locked: Locked, state: &State, how: Teardown) -> Result<Vec<String>, SandboxError> {
    let mut warnings = Vec::new();
    for e in &state.execs {
        vmm::kill(&e.shim, libc::SIGKILL);
    }
    let uds = vsock_path(&locked.dir);
    // While runv-vmm still holds the namespace.
    warnings.extend(boot::detach_network(state));
    if let Some(v) = &state.vmm {
        if v.alive() && how == Teardown::Graceful {
            if let Err(e) = agent::call_once(&uds, &Request::Shutdown, agent::TEARDOWN_LIMIT) {
                tracing::debug!("shutdown request: {e}");
            }
            if !vmm::wait_gone(v, agent::TEARDOWN_LIMIT) {
                warnings.push(format!(
                    "runv-vmm {} did not power off within {:?}; killed",
                    v.pid,
                    agent::TEARDOWN_LIMIT
                ));
            }
        }
        if !vmm::stop(v, agent::TEARDOWN_LIMIT) {
            warnings.push(format!("runv-vmm {} still exists after SIGKILL", v.pid));
        }
    }
    if let Some(p) = &state.init {
        // Its wait connection broke with the VM; give it a moment to exit by itself.
        if !vmm::wait_gone(p, std::time::Duration::from_secs(1)) {
            vmm::kill(p, libc::SIGKILL);
        }
    }
    warnings.extend(share::unmount_all(&state.mounts));
    warnings.extend(cgroups::remove(&state.cgroup_dirs));
    if let Some(h) = &state.hooks {
        let hs = hook_state(state, Status::Stopped);
        if let Err(e) = run_hooks("poststop", h.poststop().as_deref().unwrap_or_default(), &hs) {
            warnings.push(e.to_string());
        }
    }
    share::remove_state_dir(&locked.dir)?;
    drop(locked);
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_rules_follow_runc() {
        assert_eq!(tty_mode(false, None, false).unwrap(), TtyMode::None);
        assert_eq!(
            tty_mode(true, Some(Path::new("/s")), false).unwrap(),
            TtyMode::ConsoleSocket("/s".into())
        );
        assert_eq!(tty_mode(true, None, true).unwrap(), TtyMode::Inherit);
        assert!(tty_mode(true, None, false)
            .unwrap_err()
            .to_string()
            .contains("without setting console socket"));
        assert!(tty_mode(false, Some(Path::new("/s")), false).is_err());
    }

    #[test]
    fn bundle_errors_name_the_file() {
        let t = tempfile::tempdir().unwrap();
        let e = load_spec(&t.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("absent") && e.contains("not a directory"), "{e}");
        let e = load_spec(t.path()).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        std::fs::write(t.path().join("config.json"), "{not json").unwrap();
        let e = load_spec(t.path()).unwrap_err().to_string();
        assert!(e.contains("config.json: invalid config"), "{e}");
        std::fs::write(t.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        let e = load_spec(t.path()).unwrap_err().to_string();
        assert!(e.contains("process: missing"), "{e}");
    }

    #[test]
    fn network_namespace_modes() {
        let mut spec = Spec::default();
        assert_eq!(
            netns_of(&spec),
            Netns::New,
            "runc's default spec has a network ns"
        );
        let linux = spec.linux().clone().unwrap();
        let mut ns = linux.namespaces().clone().unwrap();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
        let mut l2 = linux.clone();
        l2.set_namespaces(Some(ns.clone()));
        spec.set_linux(Some(l2));
        assert_eq!(netns_of(&spec), Netns::Host);
        let mut with_path = ns;
        with_path.push(
            oci_spec::runtime::LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/var/run/netns/cni-1")
                .build()
                .unwrap(),
        );
        let mut l3 = linux;
        l3.set_namespaces(Some(with_path));
        spec.set_linux(Some(l3));
        assert_eq!(netns_of(&spec), Netns::Join("/var/run/netns/cni-1".into()));
    }

    #[test]
    fn a_bad_bundle_leaves_nothing_under_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path().join("root"));
        let bundle = t.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = Spec::default();
        spec.set_root(Some(
            oci_spec::runtime::RootBuilder::default()
                .path("missing-rootfs")
                .build()
                .unwrap(),
        ));
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let opts = CreateOptions {
            id: "c1".into(),
            bundle,
            console_socket: None,
            foreground: false,
            config: RuntimeConfig {
                kernel: "/k".into(),
                initrd: "/i".into(),
                vmm: "/nonexistent/runv-vmm".into(),
                default_cpus: 1,
                default_memory_mib: 256,
                console_limit: 65536,
                host_memory_overhead_mib: 64,
                host_pids_limit: 256,
            },
            shim_exe: "/nonexistent/runv-shim".into(),
            log: None,
            log_json: false,
            debug: false,
        };
        let e = create(&root, &opts).err().unwrap().to_string();
        assert!(
            e.contains("root.path") && e.contains("missing-rootfs"),
            "{e}"
        );
        assert!(root.list().unwrap().is_empty());
        assert!(!root.dir("c1").exists());
    }
}
