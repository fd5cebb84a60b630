//! The one place that calls `waitpid`. As PID 1 the agent must reap every orphan; as
//! any parent it must learn how its container processes ended.
//!
//! Container processes come to the agent by reparenting (they are built in a helper
//! process, see builder.rs), and libcontainer clones them with no exit signal, so the
//! reaper polls `waitpid(-1, WNOHANG | __WALL)` every few milliseconds rather than
//! waiting for SIGCHLD.
//!
//! Signals. Once a process is reaped its PID is free and may name another process, so a
//! watched process is signalled only through its [`ProcessHandle`]: a pidfd opened while
//! the process cannot have been reaped (the reaper holds its table's lock from `waitpid`
//! until the exit is recorded, and the handle is opened under that lock while the PID is
//! still watched). A pidfd names that process and no other; after the reap a signal is
//! refused. Without pidfds (Linux before 5.3) the handle signals with `kill` under the
//! same lock, again only while the PID is still watched.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use runv_agent_protocol::ExitStatus;

const POLL: Duration = Duration::from_millis(10);

/// A value set once, waited for by many.
#[derive(Debug)]
pub struct Once<T: Copy> {
    value: Mutex<Option<T>>,
    cv: Condvar,
}

impl<T: Copy> Default for Once<T> {
    fn default() -> Self {
        Once {
            value: Mutex::new(None),
            cv: Condvar::new(),
        }
    }
}

impl<T: Copy> Once<T> {
    pub fn set(&self, v: T) {
        let mut g = lock(&self.value);
        if g.is_none() {
            *g = Some(v);
            self.cv.notify_all();
        }
    }

    pub fn get(&self) -> Option<T> {
        *lock(&self.value)
    }

    /// The value, if it is set within `limit`.
    pub fn wait_timeout(&self, limit: Duration) -> Option<T> {
        let g = lock(&self.value);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |v| v.is_none())
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    pub fn wait(&self) -> T {
        let mut g = lock(&self.value);
        loop {
            if let Some(v) = *g {
                return v;
            }
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Locks, ignoring poisoning: a panicked thread must not take the agent down.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Table {
    watched: HashMap<i32, Arc<Once<ExitStatus>>>,
    /// Exits of processes nobody registered (yet): orphans, or a process that ended
    /// before its builder returned its PID.
    unclaimed: HashMap<i32, ExitStatus>,
}

impl Table {
    /// Whether `pid` is still watched with `exit`: under the table's lock, which every
    /// reap holds from `waitpid` until the exit is recorded, that means not reaped.
    fn unreaped(&self, pid: i32, exit: &Arc<Once<ExitStatus>>) -> bool {
        self.watched.get(&pid).is_some_and(|c| Arc::ptr_eq(c, exit))
    }
}

#[derive(Default)]
pub struct Reaper {
    table: Mutex<Table>,
}

impl Reaper {
    /// Starts the polling thread.
    pub fn start() -> Arc<Reaper> {
        let reaper = Arc::new(Reaper::default());
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                r.reap_all();
            })
            .expect("spawning the reaper thread");
        reaper
    }

    /// The exit of `pid`, a process that is not (yet) the agent's child: whatever exit
    /// the table remembers for that PID belongs to an earlier process that had it.
    pub fn watch_new(&self, pid: i32) -> Arc<Once<ExitStatus>> {
        let mut t = lock(&self.table);
        t.unclaimed.remove(&pid);
        let cell = Arc::new(Once::default());
        t.watched.insert(pid, cell.clone());
        cell
    }

    /// The exit of `pid`, a child of the agent, set once it has been reaped (also when
    /// it was reaped before this call).
    #[cfg(test)]
    pub fn watch(&self, pid: i32) -> Arc<Once<ExitStatus>> {
        let mut t = lock(&self.table);
        if let Some(status) = t.unclaimed.remove(&pid) {
            // Already reaped: not watched (a handle to it refuses every signal).
            let cell = Arc::new(Once::default());
            cell.set(status);
            return cell;
        }
        t.watched.entry(pid).or_default().clone()
    }

    /// A handle that signals the watched process `pid` (whose exit is `exit`, from
    /// [`Reaper::watch_new`]) and never another process that gets its PID later.
    pub fn handle(&self, pid: i32, exit: &Arc<Once<ExitStatus>>) -> ProcessHandle {
        let t = lock(&self.table);
        // Still watched under the lock: not reaped, so `pid` is this process (alive or
        // a zombie), and the pidfd names it.
        let pidfd = if !t.unreaped(pid, exit) {
            Pidfd::Closed
        } else {
            match pidfd_open(pid) {
                Ok(fd) => Pidfd::Open(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Pidfd::Unsupported,
                Err(e) => {
                    tracing::warn!(pid, "pidfd_open: {e}; signals to it will be refused");
                    Pidfd::Closed
                }
            }
        };
        drop(t);
        ProcessHandle {
            pid,
            exit: exit.clone(),
            pidfd: Mutex::new(pidfd),
        }
    }

    /// `kill(pid, signal)` if `pid` is still watched with `exit` (so not reaped: the
    /// lock is held from `waitpid` until the table is updated). The pidfd-less path.
    fn kill_unreaped(
        &self,
        pid: i32,
        exit: &Arc<Once<ExitStatus>>,
        signal: i32,
    ) -> Result<(), SignalError> {
        let t = lock(&self.table);
        if !t.unreaped(pid, exit) {
            return Err(SignalError::Exited { pid });
        }
        // SAFETY: kill has no memory effects. `pid` is unreaped (checked above, under
        // the lock every reap holds), so it still names the watched process.
        if unsafe { libc::kill(pid, signal) } < 0 {
            return Err(SignalError::Io {
                pid,
                signal,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn reap_all(&self) {
        loop {
            // Held from waitpid until the exit is recorded: while a PID is in `watched`
            // under this lock, it has not been reaped (see `handle`).
            let mut t = lock(&self.table);
            let mut raw = 0;
            // SAFETY: waitpid writes only to `raw`, a valid local.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
            if pid <= 0 {
                return;
            }
            let status = if libc::WIFSIGNALED(raw) {
                ExitStatus::Signal(libc::WTERMSIG(raw))
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(raw))
            };
            tracing::debug!(pid, ?status, "reaped");
            match t.watched.remove(&pid) {
                Some(cell) => cell.set(status),
                None => {
                    // Bounded: orphans' PIDs are recycled by the kernel, and the
                    // table only remembers the latest exit of each.
                    if t.unclaimed.len() > 4096 {
                        t.unclaimed.clear();
                    }
                    t.unclaimed.insert(pid, status);
                }
            }
        }
    }
}

/// Why a signal was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The process was reaped: its PID may be another process's now.
    #[error("process {pid} has exited")]
    Exited { pid: i32 },
    #[error("signal {signal} to process {pid}: {source}")]
    Io {
        pid: i32,
        signal: i32,
        source: io::Error,
    },
}

#[derive(Debug)]
enum Pidfd {
    Open(OwnedFd),
    /// The kernel has no pidfd_open: signal under the reaper's lock.
    Unsupported,
    /// Reaped (or never opened): every signal is refused.
    Closed,
}

/// Signals one watched process, and never a process that later gets its PID
/// ([`Reaper::handle`]). Keeps a pidfd until the process is reaped.
#[derive(Debug)]
pub struct ProcessHandle {
    pid: i32,
    exit: Arc<Once<ExitStatus>>,
    pidfd: Mutex<Pidfd>,
}

impl ProcessHandle {
    #[cfg(test)]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal`; refused with [`SignalError::Exited`] once the process is reaped.
    pub fn signal(&self, reaper: &Reaper, signal: i32) -> Result<(), SignalError> {
        let mut fd = lock(&self.pidfd);
        if self.exit.get().is_some() {
            *fd = Pidfd::Closed;
        }
        let io = |source| SignalError::Io {
            pid: self.pid,
            signal,
            source,
        };
        match &*fd {
            Pidfd::Open(f) => match pidfd_send_signal(f, signal) {
                Ok(()) => Ok(()),
                // The process is gone (reaped between the check and the call).
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    Err(SignalError::Exited { pid: self.pid })
                }
                Err(e) => Err(io(e)),
            },
            Pidfd::Unsupported => reaper.kill_unreaped(self.pid, &self.exit, signal),
            Pidfd::Closed => Err(SignalError::Exited { pid: self.pid }),
        }
    }

    /// Closes the pidfd once the process is reaped (signals are refused from then on).
    pub fn release(&self) {
        *lock(&self.pidfd) = Pidfd::Closed;
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal reads the fd and the signal number; a null siginfo
    // makes the kernel fill in a kill()-like one; flags must be 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One reaper for the tests: each polls `waitpid(-1)` for the whole test process.
    fn reaper() -> Arc<Reaper> {
        static R: std::sync::OnceLock<Arc<Reaper>> = std::sync::OnceLock::new();
        R.get_or_init(Reaper::start).clone()
    }

    /// A `sleep 60` child, watched, and its handle.
    fn watched_sleep(reaper: &Reaper) -> (i32, Arc<Once<ExitStatus>>, ProcessHandle) {
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // The reaper, not `Child::wait`, collects it.
        std::mem::forget(child);
        let exit = reaper.watch(pid);
        let handle = reaper.handle(pid, &exit);
        (pid, exit, handle)
    }

    /// The state letter of /proc/PID/stat (None: no such process).
    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].chars().next()
    }

    #[test]
    fn a_signal_reaches_the_process_and_is_refused_once_it_is_reaped() {
        let reaper = reaper();
        let (pid, exit, handle) = watched_sleep(&reaper);
        assert_eq!(handle.pid(), pid);
        handle
            .signal(&reaper, 0)
            .expect("signal 0 to a live process");
        handle.signal(&reaper, libc::SIGTERM).unwrap();
        assert_eq!(exit.wait(), ExitStatus::Signal(libc::SIGTERM));
        let e = handle.signal(&reaper, libc::SIGKILL).unwrap_err();
        assert!(
            matches!(e, SignalError::Exited { pid: p } if p == pid),
            "{e}"
        );
        assert_eq!(e.to_string(), format!("process {pid} has exited"));
        // Released (what the agent does after the reap): refused too.
        handle.release();
        assert!(matches!(
            handle.signal(&reaper, libc::SIGKILL),
            Err(SignalError::Exited { .. })
        ));
    }

    #[test]
    fn a_handle_to_a_process_already_reaped_refuses_signals() {
        let reaper = reaper();
        let (pid, exit, handle) = watched_sleep(&reaper);
        handle.signal(&reaper, libc::SIGKILL).unwrap();
        exit.wait();
        // A handle made after the reap (a stale exit cell) never opens the PID.
        let late = reaper.handle(pid, &exit);
        assert!(matches!(
            late.signal(&reaper, libc::SIGKILL),
            Err(SignalError::Exited { .. })
        ));
    }

    #[test]
    #[ignore = "needs root: writes /proc/sys/kernel/ns_last_pid to hand a reaped PID to a new process"]
    fn root_a_reaped_pid_given_to_another_process_is_never_signalled() {
        let reaper = reaper();
        let (pid, exit, handle) = watched_sleep(&reaper);
        handle.signal(&reaper, libc::SIGKILL).unwrap();
        exit.wait();
        // Another process gets the PID (other processes on the host may take it first:
        // try a few times).
        let mut other = None;
        for _ in 0..200 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            #[allow(clippy::zombie_processes)]
            let c = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            let got = c.id() as i32;
            std::mem::forget(c);
            if got == pid {
                other = Some(got);
                break;
            }
            // SAFETY: kill has no memory effects; `got` is our unreaped child.
            unsafe { libc::kill(got, libc::SIGKILL) };
        }
        let other = other.expect("no new process got the reaped PID");
        let other_exit = reaper.watch(other);
        assert!(matches!(
            handle.signal(&reaper, libc::SIGKILL),
            Err(SignalError::Exited { .. })
        ));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            matches!(proc_state(other), Some(s) if s != 'Z'),
            "the process that got PID {pid} was signalled"
        );
        assert!(other_exit.get().is_none());
        let h = reaper.handle(other, &other_exit);
        h.signal(&reaper, libc::SIGKILL).unwrap();
        assert_eq!(other_exit.wait(), ExitStatus::Signal(libc::SIGKILL));
    }

    #[test]
    fn reaps_a_child_and_reports_its_code() {
        let reaper = reaper();
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("spawn sh");
        // Even if the reaper got to it first, the exit is kept for this call.
        let cell = reaper.watch(child.id() as i32);
        // The reaper, not `Child::wait`, collects it.
        std::mem::forget(child);
        assert_eq!(cell.wait(), ExitStatus::Code(7));
    }

    #[test]
    fn once_keeps_the_first_value() {
        let o = Once::default();
        o.set(1);
        o.set(2);
        assert_eq!(o.get(), Some(1));
        assert_eq!(o.wait(), 1);
    }
}
