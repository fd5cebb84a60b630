//! Starting a `runv-shim` for one container process, and the two pipes runv and the
//! shim talk over.
//!
//! The shim inherits runv's fds 0-2 (the caller's pipes, FIFOs or terminal). Fd 3 is
//! the *ready* pipe: the shim writes `ok\n` once it listens on the stdio sockets (or
//! `error: ...\n` and exits). Fd 4 is the *go* pipe: runv writes `go\n` once the agent
//! created the process; EOF without it (runv failed, or died) makes the shim clean up
//! and exit. runv kills the shim on failure anyway.
//!
//! When the sandbox's VM boots only at `start` (its network namespace is not final at
//! create), `runv create` writes `defer\n` instead, and the init's shim then waits on
//! the *go FIFO* `<root>/<id>/go`, where `runv start` writes `go\n` once the VM is up
//! and the process created, or `fail\n` (the shim exits 1). A signal the shim receives
//! while it waits ends it with 128+N, as it would have ended the process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runv_agent_protocol::{stdio_token, StdioPorts, StdioToken, TokenError};

/// The shim's fd for the ready pipe.
pub const READY_FD: i32 = 3;
/// The shim's fd for the go pipe.
pub const GO_FD: i32 = 4;
/// How long runv waits for the shim's `ok`.
pub const READY_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("creating a pipe for runv-shim: {0}")]
    Pipe(nix::Error),
    #[error("starting {}: {source}", exe.display())]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("runv-shim: {0}")]
    Failed(String),
    #[error("runv-shim did not get ready within {0:?}")]
    NotReady(Duration),
    #[error("telling runv-shim to go: {0}")]
    Go(std::io::Error),
    #[error("making the process's stdio token: {0}")]
    Token(TokenError),
}

/// How the process's terminal is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyMode {
    /// Pipes: stdin, stdout and stderr streams.
    None,
    /// A host PTY whose master goes to this console socket.
    ConsoleSocket(PathBuf),
    /// The shim's own stdin/stdout are the terminal (`runv run -t` in the foreground).
    Inherit,
}

/// Everything a shim needs to know.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    /// The VMM's hybrid vsock socket.
    pub uds: PathBuf,
    pub container_id: String,
    pub exec_id: Option<String>,
    pub ports: StdioPorts,
    pub tty: TtyMode,
    /// Where the shim logs (its stderr belongs to the process).
    pub log: PathBuf,
    /// The go FIFO of a deferred start (the init's shim only).
    pub go_fifo: Option<PathBuf>,
    /// Serve the guest's DNS relay (`<uds>_<DNS_RELAY_PORT>`) towards the loopback
    /// nameserver of this resolv.conf, port 53, in the shim's network namespace (the
    /// init's shim only).
    pub dns_relay: Option<PathBuf>,
    pub log_json: bool,
    pub debug: bool,
}

impl ShimSpec {
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--uds".into(),
            self.uds.display().to_string(),
            "--container-id".into(),
            self.container_id.clone(),
            "--log".into(),
            self.log.display().to_string(),
        ];
        if let Some(e) = &self.exec_id {
            a.extend(["--exec-id".into(), e.clone()]);
        }
        if let Some(f) = &self.go_fifo {
            a.extend(["--go-fifo".into(), f.display().to_string()]);
        }
        if let Some(d) = &self.dns_relay {
            a.extend(["--dns-relay".into(), d.display().to_string()]);
        }
        for (name, port) in [
            ("--stdin-port", self.ports.stdin),
            ("--stdout-port", self.ports.stdout),
            ("--stderr-port", self.ports.stderr),
        ] {
            if let Some(p) = port {
                a.extend([name.into(), p.to_string()]);
            }
        }
        match &self.tty {
            TtyMode::None => {}
            TtyMode::ConsoleSocket(p) => {
                a.extend(["--console-socket".into(), p.display().to_string()])
            }
            TtyMode::Inherit => a.push("--tty-inherit".into()),
        }
        if self.log_json {
            a.push("--log-json".into());
        }
        if self.debug {
            a.push("--debug".into());
        }
        a
    }
}

/// The ports of a process: stdin, stdout and stderr, or stdin and stdout with a
/// terminal. Takes them from `first`. Each process gets a fresh token that its streams
/// must begin with (runv_agent_protocol::stdio_token): the ports alone are guessable by
/// any process in the guest.
pub fn ports_for(first: u32, terminal: bool) -> Result<(StdioPorts, u32), ShimError> {
    let token = Some(StdioToken::random().map_err(ShimError::Token)?);
    Ok(if terminal {
        (
            StdioPorts {
                stdin: Some(first),
                stdout: Some(first + 1),
                stderr: None,
                token,
            },
            2,
        )
    } else {
        (
            StdioPorts {
                stdin: Some(first),
                stdout: Some(first + 1),
                stderr: Some(first + 2),
                token,
            },
            3,
        )
    })
}

/// A started shim, waiting for `go`.
#[derive(Debug)]
pub struct Shim {
    pub child: Child,
    go: Option<File>,
}

impl Shim {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Lets the shim relay and wait for its process.
    pub fn go(&mut self) -> Result<(), ShimError> {
        self.say(b"go\n")
    }

    /// Tells the shim to wait for `runv start` on its go FIFO.
    pub fn defer(&mut self) -> Result<(), ShimError> {
        self.say(b"defer\n")
    }

    fn say(&mut self, word: &[u8]) -> Result<(), ShimError> {
        let mut f = self
            .go
            .take()
            .ok_or_else(|| ShimError::Go(std::io::Error::other("go was already sent")))?;
        f.write_all(word).map_err(ShimError::Go)
    }

    /// Kills and reaps the shim (failure paths).
    pub fn abort(mut self) {
        self.go.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The network namespace a shim runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimNetns<'a> {
    /// runv's own.
    Inherit,
    /// Joins this namespace file.
    Join(&'a Path),
    /// A new one (the init's shim of a sandbox whose spec asks for a network namespace
    /// without path): the sandbox's namespace is this shim's.
    New,
}

/// Starts `exe` with `spec` in the network namespace `netns`, and waits for its `ok`.
pub fn spawn(exe: &Path, spec: &ShimSpec, netns: ShimNetns) -> Result<Shim, ShimError> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let mut cmd = Command::new(exe);
    cmd.args(spec.args());
    // In the environment, which only root reads (/proc/PID/environ), not on the command
    // line, which every user does; the shim takes it out of its environment at once.
    if let Some(token) = &spec.ports.token {
        cmd.env(stdio_token::TOKEN_ENV, token.to_hex());
    }
    match netns {
        ShimNetns::Inherit => {}
        ShimNetns::Join(ns) => {
            let fd = crate::vmm::open_netns(ns).map_err(|e| ShimError::Failed(e.to_string()))?;
            crate::vmm::setns_in_child(&mut cmd, fd);
        }
        // SAFETY: unshare is async-signal-safe.
        ShimNetns::New => unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        },
    }
    if matches!(spec.tty, TtyMode::ConsoleSocket(_)) {
        // The process's terminal is the PTY whose master went to the console socket; the
        // shim must not keep the caller's stdio open. containerd's runc shim reads
        // `create`'s output to EOF (its own pipe when the process has a terminal), so a
        // shim holding it would hang `ctr run -t` forever, as runc's init would not.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    // SAFETY: close_range and dup2 are async-signal-safe; both source fds are open
    // (owned below until after spawn) and above the targets' range (see `pipe`).
    unsafe {
        cmd.pre_exec(move || {
            crate::vmm::cloexec_inherited();
            if libc::dup2(rw, READY_FD) < 0 || libc::dup2(gr, GO_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ShimError::Spawn {
        exe: exe.into(),
        source,
    })?;
    drop(ready_w);
    drop(go_r);
    let mut shim = Shim {
        child,
        go: Some(File::from(go_w)),
    };
    match read_ready(ready_r, READY_LIMIT) {
        Ok(()) => Ok(shim),
        Err(e) => {
            let _ = shim.child.kill();
            let _ = shim.child.wait();
            Err(e)
        }
    }
}

/// Writes `word` (`go` or `fail`) to a deferred init shim's go FIFO. Fails at once if
/// no shim waits on it (it died, or the FIFO is not there).
pub fn release(fifo: &Path, word: &str) -> Result<(), ShimError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| {
            ShimError::Go(std::io::Error::new(
                e.kind(),
                format!(
                    "{} (is the container's runv-shim alive?): {e}",
                    fifo.display()
                ),
            ))
        })?;
    f.write_all(format!("{word}\n").as_bytes())
        .map_err(ShimError::Go)
}

/// Makes the go FIFO of a deferred start (mode 0600).
pub fn make_fifo(path: &Path) -> Result<(), ShimError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| {
        ShimError::Go(std::io::Error::other(format!(
            "making {}: {e}",
            path.display()
        )))
    })
}

/// A close-on-exec pipe whose fds are 10 or above (so that dup2 onto 3 and 4 in the
/// child cannot clobber one with the other).
fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?;
    let high = |fd: OwnedFd| -> Result<OwnedFd, ShimError> {
        let n = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map_err(ShimError::Pipe)?;
        // SAFETY: n is a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(n) })
    };
    Ok((high(r)?, high(w)?))
}

fn read_ready(fd: OwnedFd, limit: Duration) -> Result<(), ShimError> {
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(0) => return Err(ShimError::NotReady(limit)),
        Ok(_) => {}
        Err(e) => return Err(ShimError::Failed(format!("waiting for ready: {e}"))),
    }
    // One line: the shim may keep the pipe open after it.
    let mut f = File::from(fd);
    let mut bytes = Vec::new();
    let mut b = [0u8; 1];
    while bytes.len() < 4096 && bytes.last() != Some(&b'\n') {
        match f.read(&mut b) {
            Ok(1) => bytes.push(b[0]),
            _ => break,
        }
    }
    let s = String::from_utf8_lossy(&bytes);
    let line = s.lines().next().unwrap_or("");
    if line == "ok" {
        Ok(())
    } else if let Some(msg) = line.strip_prefix("error: ") {
        Err(ShimError::Failed(msg.to_string()))
    } else {
        Err(ShimError::Failed(format!(
            "exited before it was ready ({line:?})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_the_spec() {
        let s = ShimSpec {
            uds: "/r/c/vsock.sock".into(),
            container_id: "c".into(),
            exec_id: Some("e1".into()),
            ports: ports_for(2000, false).unwrap().0,
            tty: TtyMode::ConsoleSocket("/tmp/cs".into()),
            log: "/r/c/shim.log".into(),
            go_fifo: Some("/r/c/go".into()),
            dns_relay: Some("/b/resolv.conf".into()),
            log_json: true,
            debug: false,
        };
        let a = s.args().join(" ");
        assert!(a.contains("--exec-id e1"), "{a}");
        assert!(
            a.contains("--go-fifo /r/c/go --dns-relay /b/resolv.conf"),
            "{a}"
        );
        assert!(
            a.contains("--stdin-port 2000 --stdout-port 2001 --stderr-port 2002"),
            "{a}"
        );
        assert!(a.contains("--console-socket /tmp/cs"), "{a}");
        assert!(a.contains("--log-json"), "{a}");
        let token = s.ports.token.expect("every process gets a token");
        assert!(
            !a.contains(&token.to_hex()),
            "the token never goes on the command line: {a}"
        );
        let (p, n) = ports_for(10, true).unwrap();
        assert_eq!(
            (p.stdin, p.stdout, p.stderr, n),
            (Some(10), Some(11), None, 2)
        );
        assert_ne!(p.token, Some(token), "a fresh token per process");
    }

    #[test]
    fn the_token_reaches_the_shim_through_its_environment_only() {
        let mut spec = ShimSpec {
            uds: "/r/c/vsock.sock".into(),
            container_id: "c".into(),
            exec_id: None,
            ports: ports_for(2000, false).unwrap().0,
            tty: TtyMode::None,
            log: "/dev/null".into(),
            go_fifo: None,
            dns_relay: None,
            log_json: false,
            debug: false,
        };
        let hex = spec.ports.token.unwrap().to_hex();
        // A stand-in shim that reports the variable and its command line on fd 3.
        let sh = "#!/bin/sh\nprintf 'error: %s|%s\\n' \"$RUNV_STDIO_TOKEN\" \"$*\" >&3\n";
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("shim");
        std::fs::write(&exe, sh).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = spawn(&exe, &spec, ShimNetns::Inherit)
            .unwrap_err()
            .to_string();
        let (env, cmdline) = e.trim_start_matches("runv-shim: ").split_once('|').unwrap();
        assert_eq!(env, hex);
        assert!(!cmdline.contains(&hex), "{cmdline}");
        spec.ports.token = None;
        let e = spawn(&exe, &spec, ShimNetns::Inherit)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("runv-shim: |"), "no token, no variable: {e}");
    }

    #[test]
    fn ready_protocol() {
        // A stand-in shim: /bin/sh writes to fd 3 what the real one would.
        let ok = spawn_sh("echo ok >&3; read x <&4; [ \"$x\" = go ]");
        let mut shim = ok.unwrap();
        shim.go().unwrap();
        assert!(shim.child.wait().unwrap().success());
        let e = spawn_sh("echo 'error: cannot bind /x_2000: denied' >&3").unwrap_err();
        assert_eq!(e.to_string(), "runv-shim: cannot bind /x_2000: denied");
        let e = spawn_sh("exit 1").unwrap_err();
        assert!(e.to_string().contains("exited before it was ready"), "{e}");
    }

    fn spawn_sh(script: &str) -> Result<Shim, ShimError> {
        let (ready_r, ready_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        let (rw, gr) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
        // SAFETY: as in `spawn`.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(rw, READY_FD) < 0 || libc::dup2(gr, GO_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(ready_w);
        drop(go_r);
        let mut shim = Shim {
            child,
            go: Some(File::from(go_w)),
        };
        match read_ready(ready_r, Duration::from_secs(5)) {
            Ok(()) => Ok(shim),
            Err(e) => {
                let _ = shim.child.wait();
                Err(e)
            }
        }
    }
}
