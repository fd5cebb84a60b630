//! Container builds in a helper process that never has a second thread.
//!
//! libcontainer creates a container's processes with raw `clone3`, which skips glibc's
//! fork handlers: a child cloned from the multi-threaded agent inherits the allocator
//! and logging locks another agent thread held at that moment, and may hang on them
//! forever. So the agent never clones itself. It starts `runv-agent __builder` (a fresh
//! exec, single-threaded for life) and sends it build requests over a SEQPACKET socket,
//! with the process's stdio fds attached (SCM_RIGHTS). For each request the builder
//! `fork`s a child that runs libcontainer and reports the new process's PID. That child
//! stays alive until the agent has registered the PID with its reaper, then exits: the
//! container process, libcontainer's `CLONE_PARENT` sibling, is reparented to the agent
//! (PID 1, or a child subreaper on a host), which reaps it.
//!
//! Every step is time-limited: the builder kills a build that takes longer than
//! [`BUILD_LIMIT`], and the agent kills a builder that does not answer (the next build
//! starts a new one).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, ForkResult, Pid};
use runv_agent_protocol::ExitStatus;
use serde::{Deserialize, Serialize};

use crate::reaper::{lock, Once, Reaper};

/// How long one libcontainer build may take (mounting a rootfs on a slow share included).
pub const BUILD_LIMIT: Duration = Duration::from_secs(60);
/// The agent's limit for the builder's answer: the build limit plus the builder's own work.
const ANSWER_LIMIT: Duration = Duration::from_secs(75);
/// The first argument that makes `runv-agent` a builder.
pub const BUILDER_ARG: &str = "__builder";
/// The environment variable naming the builder's socket fd.
const FD_ENV: &str = "RUNV_AGENT_BUILDER_FD";
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// libcontainer refused the spec or the process (the message is libcontainer's).
    #[error("{0}")]
    Refused(String),
    #[error("the container builder: {0}")]
    Builder(String),
}

/// What to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Kind {
    /// A container's init, from `bundle/config.json`.
    Init { bundle: PathBuf },
    /// A process in an existing container, from a process.json file.
    Tenant { process_file: PathBuf },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: String,
    lc_root: PathBuf,
    console_socket: Option<PathBuf>,
    kind: Kind,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Built {
        pid: i32,
    },
    Failed {
        message: String,
    },
    /// From the agent, once it watches the PID: the build child may exit.
    Release,
}

/// The process's stdio, given to the container process as its fds 0-2.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

struct Helper {
    sock: OwnedFd,
    pid: Pid,
}

/// The agent's handle on its builder process. Builds are serialized.
pub struct Builder {
    helper: Mutex<Option<Helper>>,
    reaper: Arc<Reaper>,
}

impl Builder {
    pub fn new(reaper: Arc<Reaper>) -> Self {
        Builder {
            helper: Mutex::new(None),
            reaper,
        }
    }

    /// Builds a container process; answers its PID and its (future) exit.
    pub fn build(
        &self,
        id: &str,
        lc_root: PathBuf,
        console_socket: Option<PathBuf>,
        kind: Kind,
        stdio: Stdio,
    ) -> Result<(i32, Arc<Once<ExitStatus>>), BuildError> {
        let request = Request {
            id: id.to_string(),
            lc_root,
            console_socket,
            kind,
        };
        let mut slot = lock(&self.helper);
        if slot.is_none() {
            *slot = Some(spawn_helper().map_err(|e| BuildError::Builder(format!("start: {e}")))?);
        }
        let helper = slot.as_ref().expect("just set");
        match self.exchange(helper, &request, &stdio) {
            Ok(r) => r,
            Err(e) => {
                // A builder that does not answer is killed; the next build starts another.
                tracing::warn!(
                    pid = helper.pid.as_raw(),
                    "container builder: {e}; restarting it"
                );
                let _ = kill(helper.pid, Signal::SIGKILL);
                *slot = None;
                Err(BuildError::Builder(e.to_string()))
            }
        }
    }

    /// Outer error: the builder is unusable. Inner: this build's outcome.
    #[allow(clippy::type_complexity)]
    fn exchange(
        &self,
        helper: &Helper,
        request: &Request,
        stdio: &Stdio,
    ) -> io::Result<Result<(i32, Arc<Once<ExitStatus>>), BuildError>> {
        let fds = [
            stdio.stdin.as_raw_fd(),
            stdio.stdout.as_raw_fd(),
            stdio.stderr.as_raw_fd(),
        ];
        send(helper.sock.as_fd().as_raw_fd(), &encode(request)?, &fds)?;
        let (bytes, _) = recv(helper.sock.as_raw_fd(), Some(ANSWER_LIMIT))?;
        match decode::<Reply>(&bytes)? {
            Reply::Built { pid } if pid > 0 => {
                // Registered before the build child exits: until then the new process is
                // the child's, so no exit of this PID can be mistaken for its.
                let exit = self.reaper.watch_new(pid);
                send(helper.sock.as_raw_fd(), &encode(&Reply::Release)?, &[])?;
                Ok(Ok((pid, exit)))
            }
            Reply::Built { pid } => Err(io::Error::other(format!("answered PID {pid}"))),
            Reply::Failed { message } => Ok(Err(BuildError::Refused(message))),
            Reply::Release => Err(io::Error::other("answered out of turn")),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(io::Error::other)
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> io::Result<T> {
    serde_json::from_slice(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn spawn_helper() -> io::Result<Helper> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let theirs_raw = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(BUILDER_ARG)
        .env(FD_ENV, theirs_raw.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: the closure runs between fork and exec and only calls fcntl, which is
    // async-signal-safe, on an fd that is open in the child.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::fcntl(theirs_raw, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    let pid = Pid::from_raw(child.id() as i32);
    // The reaper collects it when it exits.
    std::mem::forget(child);
    Ok(Helper { sock: ours, pid })
}

fn send(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// One message and the fds that came with it; `limit` bounds the wait.
fn recv(fd: RawFd, limit: Option<Duration>) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    if let Some(limit) = limit {
        wait_readable(fd, limit)?;
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for raw in list {
                // SAFETY: SCM_RIGHTS gave us these fds; nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let n = msg.bytes;
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too long",
        ));
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the socket",
        ));
    }
    buf.truncate(n);
    Ok((buf, fds))
}

fn wait_readable(fd: RawFd, limit: Duration) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of this call (the caller owns it).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut pfd = [PollFd::new(borrowed, PollFlags::POLLIN)];
    let end = std::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ));
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut pfd, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The builder process: `runv-agent __builder`, started by [`Builder`]. Never returns.
pub fn serve() -> ! {
    let fd: RawFd = match std::env::var(FD_ENV).ok().and_then(|v| v.parse().ok()) {
        Some(fd) => fd,
        None => {
            eprintln!(
                "runv-agent {BUILDER_ARG}: {FD_ENV} is not set; only the agent starts builders"
            );
            std::process::exit(2);
        }
    };
    // Inherited without CLOEXEC (that is how it got here); the build children's
    // container processes must not keep a channel to the agent.
    // SAFETY: fcntl on an fd number has no memory effects.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        eprintln!(
            "runv-agent {BUILDER_ARG}: fd {fd}: {}",
            io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    loop {
        let (bytes, fds) = match recv(fd, None) {
            Ok(m) => m,
            // The agent is gone (or sent garbage): nothing left to serve.
            Err(_) => std::process::exit(0),
        };
        let reply = match (decode::<Request>(&bytes), <[OwnedFd; 3]>::try_from(fds)) {
            (Ok(request), Ok([stdin, stdout, stderr])) => build_in_child(
                fd,
                &request,
                Stdio {
                    stdin,
                    stdout,
                    stderr,
                },
            ),
            (Err(e), _) => Reply::Failed {
                message: format!("bad build request: {e}"),
            },
            (_, Err(fds)) => Reply::Failed {
                message: format!("a build request needs 3 stdio fds, got {}", fds.len()),
            },
        };
        if let Reply::Failed { .. } = reply {
            if send_reply(fd, &reply).is_err() {
                std::process::exit(0);
            }
        }
    }
}

fn send_reply(fd: RawFd, reply: &Reply) -> io::Result<()> {
    send(fd, &encode(reply)?, &[])
}

/// Forks the build child, forwards its answer and, on success, waits for the agent's
/// release before letting the child exit. Returns `Failed` for the caller to send, or
/// `Release` when the exchange is complete.
fn build_in_child(sock: RawFd, request: &Request, stdio: Stdio) -> Reply {
    let pipes = pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .and_then(|r| pipe2(nix::fcntl::OFlag::O_CLOEXEC).map(|h| (r, h)));
    let ((result_rd, result_wr), (hold_rd, hold_wr)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            return Reply::Failed {
                message: format!("pipe: {e}"),
            }
        }
    };
    // SAFETY: this process is single-threaded (a fresh exec that starts no threads), so
    // the child may run any code.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(result_rd);
            drop(hold_wr);
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let reply = run_libcontainer(request, stdio);
            let mut line = encode(&reply).unwrap_or_default();
            line.push(b'\n');
            let _ = nix::unistd::write(&result_wr, &line);
            drop(result_wr);
            // Until the builder closes its end: the agent is watching the PID by then.
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(hold_rd.as_raw_fd(), &mut b);
            // SAFETY: _exit ends the process without running atexit handlers or
            // destructors that belong to the builder.
            unsafe { libc::_exit(0) };
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            return Reply::Failed {
                message: format!("fork: {e}"),
            }
        }
    };
    drop(result_wr);
    drop(hold_rd);
    drop(stdio);
    let reply = match read_answer(result_rd, child, BUILD_LIMIT) {
        Ok(bytes) => decode::<Reply>(&bytes).unwrap_or_else(|e| Reply::Failed {
            message: format!("the build process answered garbage: {e}"),
        }),
        Err(e) => {
            let _ = killpg(child, Signal::SIGKILL);
            let _ = kill(child, Signal::SIGKILL);
            Reply::Failed {
                message: format!("the build did not finish: {e}"),
            }
        }
    };
    let reply = match reply {
        Reply::Built { pid } => {
            if send_reply(sock, &Reply::Built { pid }).is_err() {
                std::process::exit(0);
            }
            // The agent answers `Release` once it watches the PID; if it never does,
            // it kills this builder and the child goes with its hold pipe.
            let _ = recv(sock, None);
            Reply::Release
        }
        other => other,
    };
    drop(hold_wr);
    let _ = waitpid(child, None);
    reply
}

/// The child's answer: one JSON line. Not "until EOF": the container process, cloned
/// from the child, holds the pipe's write end until it execs.
fn read_answer(fd: OwnedFd, child: Pid, limit: Duration) -> io::Result<Vec<u8>> {
    let end = std::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if out.ends_with(b"\n") {
            out.pop();
            return Ok(out);
        }
        if std::time::Instant::now() >= end {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ));
        }
        match wait_readable(fd.as_raw_fd(), Duration::from_millis(100)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                // A child that died without a (complete) answer will not give one.
                use nix::sys::wait::{WaitPidFlag, WaitStatus};
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => continue,
                    Ok(status) => {
                        return Err(io::Error::other(format!(
                            "the build process ended ({status:?}) without an answer"
                        )))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the build process closed its answer pipe without answering",
                ))
            }
            Ok(n) if out.len() + n <= MAX_MESSAGE => out.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(io::Error::other("answer too long")),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_libcontainer(request: &Request, stdio: Stdio) -> Reply {
    let failed = |e: &dyn std::fmt::Display| Reply::Failed {
        message: e.to_string(),
    };
    let base = match ContainerBuilder::new(request.id.clone(), SyscallType::default())
        .with_root_path(request.lc_root.clone())
    {
        Ok(b) => b,
        Err(e) => return failed(&format!("libcontainer root: {e}")),
    };
    let base = base
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .with_console_socket(request.console_socket.clone());
    let pid = match &request.kind {
        Kind::Init { bundle } => base
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map(|c| c.pid().map(|p| p.as_raw()).unwrap_or(0)),
        Kind::Tenant { process_file } => base
            .as_tenant()
            .with_detach(true)
            .with_process(Some(process_file))
            .build()
            .map(|p| p.as_raw()),
    };
    match pid {
        Ok(pid) if pid > 0 => Reply::Built { pid },
        Ok(pid) => failed(&format!("libcontainer gave PID {pid}")),
        Err(e) => failed(&e),
    }
}
