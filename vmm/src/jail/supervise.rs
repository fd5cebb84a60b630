//! The new PID namespace: the process runv started forks the VMM into it and stays
//! outside as its supervisor.
//!
//! A process cannot move itself into a new PID namespace; the first child after
//! `unshare(CLONE_NEWPID)` is PID 1 of it. The supervisor keeps the PID runv recorded,
//! its network namespace (exec shims join it through `/proc/<pid>/ns/net`) and its exit
//! status contract: it exits with the VMM's status, or 128+N when the VMM died of
//! signal N. SIGTERM, SIGINT, SIGHUP and SIGQUIT to the supervisor SIGKILL the VMM (as
//! PID 1 of its namespace the VMM ignores signals it has no handler for); SIGKILL of the
//! supervisor kills the VMM through PR_SET_PDEATHSIG. The supervisor closes every fd but
//! stdio, drops every capability and runs under its own seccomp filter.

use super::Error;

/// Signals the supervisor waits for.
const WAITED: [libc::c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

/// Forks into a new PID namespace. Returns in the child (PID 1 there); the parent
/// becomes the supervisor and never returns.
pub fn fork_into_pid_namespace() -> Result<(), Error> {
    // SAFETY: unshare has no memory effects.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(Error::sys("unshare(PID namespace)"));
    }
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::sys("pipe2"));
    }
    // SAFETY: sigset_t is plain data; the sig* calls only write the sets given.
    let (set, old) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in WAITED {
            libc::sigaddset(&mut set, s);
        }
        // Blocked before the fork: a signal to the supervisor is never lost.
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    };
    // SAFETY: the process is single-threaded here (the jail is entered before any thread
    // starts), so the child may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(Error::sys("fork into the new PID namespace")),
        0 => {
            // SAFETY: plain syscalls on fds and masks this process owns.
            unsafe {
                libc::close(pipe[1]);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(Error::sys("PR_SET_PDEATHSIG"));
                }
                // The supervisor may have died before PDEATHSIG was armed: then the
                // pipe's write end is closed.
                let mut pfd = libc::pollfd {
                    fd: pipe[0],
                    events: libc::POLLIN,
                    revents: 0,
                };
                libc::poll(&mut pfd, 1, 0);
                if pfd.revents & libc::POLLHUP != 0 {
                    libc::_exit(1);
                }
                libc::close(pipe[0]);
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            }
            Ok(())
        }
        vmm => {
            // SAFETY: closes fds this process owns; nothing else uses them.
            unsafe {
                libc::close(pipe[0]);
                // Every fd but stdio and the pipe: the taps and files are the VMM's.
                close_range(3, pipe[1] as libc::c_uint - 1);
                close_range(pipe[1] as libc::c_uint + 1, libc::c_uint::MAX);
            }
            supervise(vmm, &set)
        }
    }
}

/// close_range(2) without flags; errors (an empty range) are of no interest.
///
/// # Safety
/// The fds in the range must not be in use by anything in this process.
unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) {
    if first <= last {
        // SAFETY: the caller vouches for the range; close_range has no memory effects.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    }
}

/// Waits for the VMM `vmm` and exits with its status.
fn supervise(vmm: libc::pid_t, set: &libc::sigset_t) -> ! {
    if let Err(e) = crate::seccomp::confine_supervisor() {
        eprintln!("runv-vmm: {e}");
        // SAFETY: kill and _exit have no memory effects.
        unsafe {
            libc::kill(vmm, libc::SIGKILL);
            libc::_exit(1);
        }
    }
    loop {
        // SAFETY: siginfo_t is plain data the call fills; `set` is a valid set.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(set, &mut info)
        };
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: `status` is valid for the call.
            if unsafe { libc::waitpid(vmm, &mut status, libc::WNOHANG) } == vmm {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                // SAFETY: ends this process; nothing to flush (stdio unbuffered).
                unsafe { libc::_exit(code) };
            }
        } else if sig > 0 {
            // SAFETY: kill has no memory effects; `vmm` is this process's unreaped child,
            // so its PID cannot have been reused.
            unsafe { libc::kill(vmm, libc::SIGKILL) };
        }
    }
}
