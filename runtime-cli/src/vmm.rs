//! Starting and stopping a sandbox's runv-vmm, and the network namespace of the
//! sandbox's host processes.
//!
//! The VMM is detached: a new session (setsid), stdin /dev/null, stdout and stderr to
//! a log file in the state directory, so it holds none of the caller's stdio and
//! survives the runv call.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::HostProcess;

/// The guest kernel command line.
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux \
     i8042.nomux i8042.dumbkbd tsc=reliable quiet";
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
    #[error("starting {}: {source}", vmm.display())]
    Spawn {
        vmm: PathBuf,
        source: std::io::Error,
    },
}

/// Where the sandbox's host processes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// No network namespace in the spec: the caller's.
    Host,
    /// The spec's path (a CNI namespace).
    Join(PathBuf),
    /// A network namespace without path: a new one, made for the VMM; the shims join it
    /// through /proc/<vmm>/ns/net.
    New,
}

impl Netns {
    /// The namespace file a shim joins, given the VMM's PID.
    pub fn for_shim(&self, vmm_pid: i32) -> Option<PathBuf> {
        match self {
            Netns::Host => None,
            Netns::Join(p) => Some(p.clone()),
            Netns::New => Some(PathBuf::from(format!("/proc/{vmm_pid}/ns/net"))),
        }
    }
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
    /// stdout and stderr of the VMM.
    pub log: PathBuf,
    pub netns: Netns,
}

/// The guest kernel's command line. `agent_log` (from `RUNV_AGENT_LOG`, a tracing filter
/// such as `debug`) reaches the agent as an environment variable: the kernel hands
/// unknown `KEY=VALUE` words to init. A filter with anything but
/// `[A-Za-z0-9_=,:.-]` is ignored (it would split the command line).
fn cmdline(agent_log: Option<&str>) -> String {
    match agent_log {
        Some(f)
            if !f.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_=,:.-".contains(&b)) =>
        {
            format!("{CMDLINE} RUNV_AGENT_LOG={f}")
        }
        _ => CMDLINE.into(),
    }
}

impl VmmLaunch {
    pub fn args(&self) -> Vec<String> {
        vec![
            "--kernel".into(),
            self.kernel.display().to_string(),
            "--initrd".into(),
            self.initrd.display().to_string(),
            "--cmdline".into(),
            cmdline(std::env::var("RUNV_AGENT_LOG").ok().as_deref()),
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
        ]
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
        match &self.netns {
            Netns::Host => {}
            Netns::Join(p) => setns_in_child(&mut cmd, open_netns(p)?),
            Netns::New => {
                // SAFETY: unshare is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::unshare(libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
        }
        // SAFETY: setsid, sigemptyset and pthread_sigmask are async-signal-safe; the set
        // lives on the child's stack. The VMM kicks its vCPU threads with signals, so it
        // must not start with the caller's blocked mask.
        unsafe {
            cmd.pre_exec(|| {
                cloexec_inherited();
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                if libc::setsid() < 0 {
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
        assert_eq!(cmdline(None), CMDLINE);
        assert_eq!(
            cmdline(Some("debug")),
            format!("{CMDLINE} RUNV_AGENT_LOG=debug")
        );
        assert_eq!(
            cmdline(Some("runv_agent=debug,libcontainer=trace")),
            format!("{CMDLINE} RUNV_AGENT_LOG=runv_agent=debug,libcontainer=trace")
        );
        assert_eq!(cmdline(Some("debug init=/bin/sh")), CMDLINE);
        assert_eq!(cmdline(Some("")), CMDLINE);
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
            log: "/run/runv/c1/vmm.log".into(),
            netns: Netns::Host,
        };
        let a = l.args().join(" ");
        assert!(a.contains("--fs tag=runv,path=/run/runv/c1/share"), "{a}");
        assert!(
            a.contains("--vsock cid=3,uds=/run/runv/c1/vsock.sock"),
            "{a}"
        );
        assert!(a.contains("--cpus 2 --memory 320"), "{a}");
        assert!(a.contains("--console /run/runv/c1/console.log"), "{a}");
        assert_eq!(
            Netns::New.for_shim(7),
            Some(PathBuf::from("/proc/7/ns/net"))
        );
        assert_eq!(Netns::Host.for_shim(7), None);
    }

    #[test]
    fn spawn_failure_names_the_binary() {
        let dir = crate::test_util::TempDir::new("vmm-spawn");
        let l = VmmLaunch {
            vmm: "/nonexistent/runv-vmm".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            cpus: 1,
            memory_mib: 128,
            share_dir: dir.path().into(),
            uds: dir.path().join("s"),
            console: dir.path().join("c"),
            log: dir.path().join("log"),
            netns: Netns::Host,
        };
        let e = l.spawn().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/runv-vmm"), "{e}");
    }
}
