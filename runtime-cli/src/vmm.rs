//! Starting and stopping a sandbox's runv-vmm, and joining the sandbox's network
//! namespace in a child.
//!
//! The VMM is detached: a new session (setsid), stdin /dev/null, stdout and stderr to
//! a log file in the state directory, so it holds none of the caller's stdio and
//! survives the runv call.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::HostProcess;

/// The virtio-fs tag of the sandbox share.
pub const SHARE_TAG: &str = "runv";
/// The guest's vsock CID.
pub const GUEST_CID: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host cgroup {}: {source}", path.display())]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {}: {source}", vmm.display())]
    Spawn {
        vmm: PathBuf,
        source: std::io::Error,
    },
}

/// Opens a namespace file for `setns` in a child (before fork: no allocation after).
pub fn open_netns(path: &Path) -> Result<OwnedFd, VmmError> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| VmmError::Netns {
            path: path.into(),
            source,
        })
}

/// Makes `cmd` join `fd`'s network namespace in the child.
pub fn setns_in_child(cmd: &mut Command, fd: OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: setns is async-signal-safe; `fd` is kept open by the closure, which owns it.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One NIC of the VM: a tap runv opened (`network::Tap`), inherited by runv-vmm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicArg {
    /// The tap's fd in runv; the VMM inherits it under the same number.
    pub fd: RawFd,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// What the VMM is started with.
#[derive(Debug, Clone)]
pub struct VmmLaunch {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: u32,
    pub memory_mib: u64,
    pub share_dir: PathBuf,
    pub uds: PathBuf,
    pub console: PathBuf,
    /// Bytes of console output written to `console` at most.
    pub console_limit: u64,
    /// stdout and stderr of the VMM.
    pub log: PathBuf,
    /// The network namespace to join (the sandbox's), if any.
    pub netns: Option<PathBuf>,
    /// One virtio-net device each; the fds must stay open in runv until `spawn`.
    pub nics: Vec<NicArg>,
    /// Host cgroup directories the VMM starts in (joined before exec, so the process
    /// it forks into its PID namespace is in them too).
    pub cgroups: Vec<PathBuf>,
}

/// What runv adds to runv-vmm's guest kernel command line (runv-vmm owns the line
/// itself). `agent_log` (from `RUNV_AGENT_LOG`, a tracing filter such as `debug`)
/// reaches the agent as an environment variable: the kernel hands unknown `KEY=VALUE`
/// words to init. A filter with anything but `[A-Za-z0-9_=,:.-]` is ignored (it would
/// split the command line).
fn cmdline_append(agent_log: Option<&str>) -> Option<String> {
    match agent_log {
        Some(f)
            if !f.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_=,:.-".contains(&b)) =>
        {
            Some(format!("RUNV_AGENT_LOG={f}"))
        }
        _ => None,
    }
}

impl VmmLaunch {
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--kernel".into(),
            self.kernel.display().to_string(),
            "--initrd".into(),
            self.initrd.display().to_string(),
        ];
        if let Some(words) = cmdline_append(std::env::var("RUNV_AGENT_LOG").ok().as_deref()) {
            args.extend(["--cmdline-append".into(), words]);
        }
        args.extend([
            "--cpus".into(),
            self.cpus.to_string(),
            "--memory".into(),
            self.memory_mib.to_string(),
            "--fs".into(),
            format!("tag={SHARE_TAG},path={}", self.share_dir.display()),
            "--vsock".into(),
            format!("cid={GUEST_CID},uds={}", self.uds.display()),
            "--console".into(),
            self.console.display().to_string(),
            "--console-limit".into(),
            self.console_limit.to_string(),
            // Its own namespaces, a root with only the VM's files, few capabilities
            // (docs/security.md); seccomp filters are on by default.
            "--jail".into(),
        ]);
        for n in &self.nics {
            args.extend([
                "--net".into(),
                format!(
                    "fd={},mac={},mtu={}",
                    n.fd,
                    runv_agent_protocol::message::format_mac(&n.mac),
                    n.mtu
                ),
            ]);
        }
        args
    }

    /// Starts the VMM, detached.
    pub fn spawn(&self) -> Result<Child, VmmError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| VmmError::Log {
                path: self.log.clone(),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| VmmError::Log {
            path: self.log.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.vmm);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Ok(filter) = std::env::var("RUNV_VMM_LOG") {
            cmd.env("RUNV_LOG", filter);
        }
        if let Some(p) = &self.netns {
            setns_in_child(&mut cmd, open_netns(p)?);
        }
        let taps: Vec<RawFd> = self.nics.iter().map(|n| n.fd).collect();
        let cgroup_procs = self
            .cgroups
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| VmmError::Cgroup { path, source })
            })
            .collect::<Result<Vec<File>, _>>()?;
        // SAFETY: write, setsid, fcntl, sigemptyset, pthread_sigmask and prctl are
        // async-signal-safe; the set lives on the child's stack; `taps` and
        // `cgroup_procs` were made before the fork and are only read. The VMM kicks its
        // vCPU threads with signals, so it must not start with the caller's blocked mask.
        unsafe {
            cmd.pre_exec(move || {
                // "0" is the writer itself: the VMM is in the sandbox's cgroups from
                // its first instruction.
                for f in &cgroup_procs {
                    if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                cloexec_inherited();
                // The taps are the VMM's to keep: inherited under their numbers.
                for &fd in &taps {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The VMM parses guest input and executes nothing: no execve from it (or
                // anything an exploit makes it run) may gain privileges.
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|source| VmmError::Spawn {
            vmm: self.vmm.clone(),
            source,
        })
    }
}

/// In a child between fork and exec: marks every fd above stdio close-on-exec, so a
/// long-lived sandbox process keeps nothing its caller happened to leave inheritable
/// (containerd's shim sockets, a caller's pipes): runc's init closes them too. Fds
/// set up after this call (dup2 targets) stay inheritable. Kernels before 5.11 lack
/// CLOSE_RANGE_CLOEXEC; there the fds are left as they are.
pub fn cloexec_inherited() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
    // SAFETY: close_range only changes this process's fd flags; it is async-signal-safe.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Waits until `p` is gone, up to `limit`. True if it is gone.
pub fn wait_gone(p: &HostProcess, limit: Duration) -> bool {
    let start = Instant::now();
    while p.alive() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// How long runv-vmm's supervisor gets to SIGKILL and reap the VMM on SIGTERM.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(2);

/// Ends a sandbox's runv-vmm: SIGTERM, on which its jail's supervisor SIGKILLs the
/// jailed VMM and exits once it has reaped it (so no VMM outlives this call), then
/// SIGKILL if it is still there after [`SUPERVISOR_GRACE`]. True if it is gone within
/// `limit`.
pub fn stop(p: &HostProcess, limit: Duration) -> bool {
    kill(p, libc::SIGTERM);
    if wait_gone(p, SUPERVISOR_GRACE.min(limit)) {
        return true;
    }
    kill(p, libc::SIGKILL);
    wait_gone(p, limit)
}

/// [`stop`] for the runv-vmm runv just started (and must reap).
pub fn stop_child(child: &mut Child) {
    // SAFETY: kill has no memory effects; the child is unreaped, so its PID is its own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < SUPERVISOR_GRACE {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs `p` if it is still the recorded process.
pub fn kill(p: &HostProcess, signal: i32) {
    if p.alive() {
        // SAFETY: kill has no memory effects; `alive` checked the start time, so the PID
        // was not recycled (a race in the microseconds between is harmless: same owner).
        unsafe {
            libc::kill(p.pid, signal);
        }
    }
}

/// The last `max` bytes of a file, for error messages.
pub fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_log_filter_reaches_the_command_line_only_when_harmless() {
        assert_eq!(cmdline_append(None), None);
        assert_eq!(
            cmdline_append(Some("debug")).as_deref(),
            Some("RUNV_AGENT_LOG=debug")
        );
        assert_eq!(
            cmdline_append(Some("runv_agent=debug,libcontainer=trace")).as_deref(),
            Some("RUNV_AGENT_LOG=runv_agent=debug,libcontainer=trace")
        );
        assert_eq!(cmdline_append(Some("debug init=/bin/sh")), None);
        assert_eq!(cmdline_append(Some("")), None);
    }

    #[test]
    fn inherited_fds_are_not_passed_on() {
        let f = File::open("/dev/null").unwrap();
        // SAFETY: dup of an open fd; the result is owned and closed below.
        let leaky = unsafe { libc::dup(f.as_raw_fd()) };
        assert!(leaky > 2);
        let fds = |cloexec: bool| {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg("ls /proc/self/fd");
            if cloexec {
                // SAFETY: cloexec_inherited is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        cloexec_inherited();
                        Ok(())
                    });
                }
            }
            let out = cmd.output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let listed = |s: &str| s.lines().any(|l| l == leaky.to_string());
        // Without it the dup'ed fd (no CLOEXEC) reaches the child: the check can fail.
        assert!(listed(&fds(false)));
        assert!(!listed(&fds(true)));
        // SAFETY: leaky is open and owned here.
        unsafe { libc::close(leaky) };
    }

    #[test]
    fn command_line_of_the_vmm() {
        let l = VmmLaunch {
            vmm: "/x/runv-vmm".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cpus: 2,
            memory_mib: 320,
            share_dir: "/run/runv/c1/share".into(),
            uds: "/run/runv/c1/vsock.sock".into(),
            console: "/run/runv/c1/console.log".into(),
            console_limit: 65536,
            log: "/run/runv/c1/vmm.log".into(),
            netns: None,
            nics: vec![NicArg {
                fd: 9,
                mac: [2, 0x42, 0xac, 0x11, 0, 2],
                mtu: 1400,
            }],
            cgroups: vec![],
        };
        let a = l.args().join(" ");
        assert!(
            !a.contains("--cmdline "),
            "runv-vmm owns the command line: {a}"
        );
        assert!(a.contains("--fs tag=runv,path=/run/runv/c1/share"), "{a}");
        assert!(
            a.contains("--vsock cid=3,uds=/run/runv/c1/vsock.sock"),
            "{a}"
        );
        assert!(a.contains("--cpus 2 --memory 320"), "{a}");
        assert!(
            a.contains("--console /run/runv/c1/console.log --console-limit 65536"),
            "{a}"
        );
        assert!(
            a.contains("--net fd=9,mac=02:42:ac:11:00:02,mtu=1400"),
            "{a}"
        );
        assert!(a.contains("--jail"), "{a}");
    }

    /// A launch of `vmm` whose files are in `dir` (log: `dir/log`).
    fn launch_in(dir: &Path, vmm: PathBuf) -> VmmLaunch {
        VmmLaunch {
            vmm,
            kernel: "/k".into(),
            initrd: "/i".into(),
            cpus: 1,
            memory_mib: 128,
            share_dir: dir.into(),
            uds: dir.join("s"),
            console: dir.join("c"),
            console_limit: 65536,
            log: dir.join("log"),
            netns: None,
            nics: vec![],
            cgroups: vec![],
        }
    }

    #[test]
    fn spawn_failure_names_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let l = launch_in(dir.path(), "/nonexistent/runv-vmm".into());
        let e = l.spawn().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/runv-vmm"), "{e}");
    }

    #[test]
    fn the_vmm_starts_with_no_new_privs_in_a_session_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in VMM that writes what it was started with to its log.
        let vmm = dir.path().join("vmm");
        std::fs::write(
            &vmm,
            "#!/bin/sh\ngrep NoNewPrivs /proc/self/status\necho sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$\n",
        )
        .unwrap();
        std::fs::set_permissions(&vmm, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let l = launch_in(dir.path(), vmm);
        assert!(l.spawn().unwrap().wait().unwrap().success());
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(
            log.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains("NoNewPrivs: 1"),
            "{log}"
        );
        let ids: Vec<&str> = log.lines().last().unwrap().split(' ').collect();
        assert_eq!(
            ids[0].trim_start_matches("sid="),
            ids[1].trim_start_matches("pid="),
            "a session leader: {log}"
        );
    }
}
