//! `runv-shim`: the host side of one container process (the init or an exec).
//!
//! runv starts it with the caller's fds 0-2, the ready pipe on fd 3 and the go pipe on
//! fd 4 (runv_runtime::shim). It listens at `<uds>_<port>` for the process's stdio streams,
//! says `ok`, and once runv says `go` (on the go pipe, or for a sandbox whose VM boots at
//! `start`, on the go FIFO that `runv start` writes; runv_runtime::shim): relays stdio (or a PTY), waits for the process
//! on a connection of its own (`wait_process` with `kill_on_close`, so killing the shim
//! kills the process), forwards the signals it receives, and exits with the process's
//! status (128+N for signal N) after the output is drained. If the VM goes away first,
//! it exits 137, as if the process had been SIGKILLed (it was, with the VM).

mod auth;
mod relay;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use runv_agent_protocol::{stdio_token, Request, Response, StdioToken};
use runv_runtime::shim::{GO_FD, READY_FD};
use runv_runtime::{agent, console, dns_relay, log};

/// Exit status when the VM (and the process with it) went away.
const VM_GONE: i32 = 137;
/// How long output may take to drain after the exit was reported.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "runv-shim",
    about = "runv's per-process shim (started by runv)"
)]
struct Args {
    #[arg(long)]
    uds: PathBuf,
    #[arg(long)]
    container_id: String,
    #[arg(long)]
    exec_id: Option<String>,
    #[arg(long)]
    stdin_port: Option<u32>,
    #[arg(long)]
    stdout_port: Option<u32>,
    #[arg(long)]
    stderr_port: Option<u32>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    tty_inherit: bool,
    #[arg(long)]
    log: PathBuf,
    /// Wait for `go` here when runv says `defer` (the VM boots at `start`).
    #[arg(long)]
    go_fifo: Option<PathBuf>,
    /// Serve the guest's DNS relay towards the loopback nameserver of this resolv.conf
    /// (the init's shim).
    #[arg(long)]
    dns_relay: Option<PathBuf>,
    #[arg(long)]
    log_json: bool,
    #[arg(long)]
    debug: bool,
}

fn main() {
    // SAFETY: fds 3 and 4 are the pipes runv set up for this process (runv_runtime::shim);
    // nothing else in this process owns them.
    let (mut ready, go) = unsafe { (File::from_raw_fd(READY_FD), File::from_raw_fd(GO_FD)) };
    // The stdio token, out of the environment before anything could pass it on.
    let token = std::env::var(stdio_token::TOKEN_ENV).ok();
    // SAFETY: no other thread exists yet that could read the environment concurrently.
    unsafe { std::env::remove_var(stdio_token::TOKEN_ENV) };
    let token = match token.as_deref().map(StdioToken::from_hex).transpose() {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(ready, "error: {}: {e}", stdio_token::TOKEN_ENV);
            std::process::exit(2);
        }
    };
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(ready, "error: {}", e.to_string().replace('\n', " "));
            std::process::exit(2);
        }
    };
    // Before any thread exists: the forwarded signals and SIGWINCH are taken by sigwait.
    let mut set = SigSet::empty();
    for s in runv_runtime::signals::forwarded_signals() {
        set.add(s);
    }
    set.add(Signal::SIGWINCH);
    if let Err(e) = set.thread_block() {
        let _ = writeln!(ready, "error: blocking signals: {e}");
        std::process::exit(1);
    }
    let format = if args.log_json {
        log::Format::Json
    } else {
        log::Format::Text
    };
    if let Ok(sink) = log::Sink::open(Some(&args.log), format) {
        log::install(Arc::new(sink), args.debug);
    }
    let code = match run(&args, token, ready, go, set) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(
                "runv-shim {}/{}: {e:#}",
                args.container_id,
                args.exec_id.as_deref().unwrap_or("init")
            );
            VM_GONE
        }
    };
    std::process::exit(code);
}

/// The terminal side of a `terminal: true` process.
struct Tty {
    /// Where the process's input comes from and its output goes (the PTY slave, or
    /// this shim's own stdin/stdout).
    input: File,
    output: File,
    /// The fd whose window size is the process's.
    size_fd: i32,
    /// Settings to restore on exit (inherited terminal in raw mode).
    restore: Option<(File, nix::sys::termios::Termios)>,
    /// Keeps the master open until the caller has it (the slave needs an open master).
    _master: Option<std::os::fd::OwnedFd>,
}

fn setup_tty(args: &Args) -> Result<Option<Tty>> {
    if let Some(sock) = &args.console_socket {
        let pty = console::open_pty()?;
        console::make_raw(pty.slave.as_fd())?;
        console::take_as_ctty(pty.slave.as_raw_fd())?;
        console::send_console(sock, pty.master.as_fd(), &pty.name)?;
        let slave = File::from(pty.slave);
        return Ok(Some(Tty {
            input: slave.try_clone()?,
            size_fd: slave.as_raw_fd(),
            output: slave,
            restore: None,
            // The caller now holds the master; ours can go.
            _master: None,
        }));
    }
    if args.tty_inherit {
        let input = relay::dup_fd(0)?;
        let restore = if console::is_tty(0) {
            let t = relay::dup_fd(0)?;
            let old = console::make_raw(t.as_fd())?;
            Some((t, old))
        } else {
            None
        };
        return Ok(Some(Tty {
            input,
            output: relay::dup_fd(1)?,
            size_fd: 0,
            restore,
            _master: None,
        }));
    }
    Ok(None)
}

fn run(
    args: &Args,
    token: Option<StdioToken>,
    mut ready: File,
    mut go: File,
    set: SigSet,
) -> Result<i32> {
    let prepared = (|| -> Result<_> {
        let mut listeners = Vec::new();
        for (name, port) in [
            ("stdin", args.stdin_port),
            ("stdout", args.stdout_port),
            ("stderr", args.stderr_port),
        ] {
            if let Some(p) = port {
                listeners.push(relay::Listener::bind(&args.uds, name, p)?);
            }
        }
        if let Some(resolv_conf) = &args.dns_relay {
            let path = runv_hvsock::port_path(&args.uds, dns_relay::DNS_RELAY_PORT);
            let _ = std::fs::remove_file(&path);
            let l = runv_hvsock::uds::bind(&path)
                .with_context(|| format!("binding {} (dns relay)", path.display()))?;
            dns_relay::spawn(l, dns_relay::Upstream::ResolvConf(resolv_conf.clone()))
                .context("starting the dns relay")?;
        }
        let tty = setup_tty(args)?;
        Ok((listeners, tty))
    })();
    let (listeners, tty) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(ready, "error: {}", format!("{e:#}").replace('\n', " "));
            bail!("setup: {e:#}");
        }
    };
    let mut streams = std::collections::HashMap::new();
    let mut paths = Vec::new();
    for l in listeners {
        let name = l.name;
        let (rx, path) = l.accept_in_background(token);
        streams.insert(name, rx);
        paths.push(path);
    }
    writeln!(ready, "ok").context("telling runv the shim is ready")?;
    drop(ready);

    let size_fd = tty.as_ref().map(|t| t.size_fd);
    let released = Arc::new(AtomicBool::new(false));
    let mut word = read_word(&mut go);
    drop(go);
    let deferred = word == "defer";
    if deferred {
        // Until `runv start` boots the VM, a signal ends this shim as it would have
        // ended the process.
        spawn_signal_forwarder(args, set, size_fd, released.clone());
        word = match &args.go_fifo {
            Some(fifo) => File::open(fifo)
                .map(|mut f| read_word(&mut f))
                .with_context(|| format!("opening the go FIFO {}", fifo.display()))?,
            None => bail!("runv said defer, but there is no --go-fifo"),
        };
    }
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    if word != "go" {
        // runv failed to create the process (or died): nothing to relay.
        return Ok(1);
    }
    released.store(true, Ordering::Release);

    // Wait first: from here on, this shim dying kills the process.
    let mut waiter = agent::connect(&args.uds)?;
    waiter
        .send(&Request::WaitProcess {
            container_id: args.container_id.clone(),
            exec_id: args.exec_id.clone(),
            kill_on_close: true,
        })
        .context("sending wait_process")?;

    let mut outputs = Vec::new();
    let mut restore = None;
    match tty {
        Some(t) => {
            if let Some(rx) = streams.remove("stdin") {
                relay::spawn_stdin(t.input, rx);
            }
            if let Some(rx) = streams.remove("stdout") {
                outputs.push(relay::spawn_output(rx, t.output));
            }
            restore = t.restore;
        }
        None => {
            if let Some(rx) = streams.remove("stdin") {
                relay::spawn_stdin(relay::dup_fd(0)?, rx);
            }
            if let Some(rx) = streams.remove("stdout") {
                outputs.push(relay::spawn_output(rx, relay::dup_fd(1)?));
            }
            if let Some(rx) = streams.remove("stderr") {
                outputs.push(relay::spawn_output(rx, relay::dup_fd(2)?));
            }
        }
    }
    if !deferred {
        spawn_signal_forwarder(args, set, size_fd, released);
    }
    if let Some(fd) = size_fd {
        resize(args, fd);
    }

    let answer = waiter.recv();
    let code = match answer {
        Ok(frame) => match frame.response {
            Response::Exited { status } => status.shell_code(),
            Response::Error(e) => {
                tracing::error!("wait_process: {e}");
                VM_GONE
            }
            other => {
                tracing::error!("wait_process answered {}", other.kind());
                VM_GONE
            }
        },
        Err(e) => {
            tracing::warn!("waiting for the process: {e}; the VM is gone");
            VM_GONE
        }
    };
    if !relay::join_all(outputs, DRAIN_LIMIT) {
        tracing::warn!("output not drained within {DRAIN_LIMIT:?} after the exit");
    }
    if let Some((f, t)) = restore {
        console::restore(f.as_fd(), &t);
    }
    Ok(code)
}

/// Sends the terminal's current size to the process.
fn resize(args: &Args, fd: i32) {
    let Some((rows, cols)) = console::window_size(fd) else {
        return;
    };
    if rows == 0 && cols == 0 {
        return;
    }
    let r = agent::call_once(
        &args.uds,
        &Request::ResizeTty {
            container_id: args.container_id.clone(),
            exec_id: args.exec_id.clone(),
            rows,
            cols,
        },
        agent::CALL_LIMIT,
    );
    if let Err(e) = r {
        tracing::debug!("resize_tty: {e}");
    }
}

/// One word (`go`, `defer`, `fail`) from runv, or "" at EOF.
fn read_word(from: &mut File) -> String {
    let mut word = String::new();
    let _ = from.take(16).read_to_string(&mut word);
    word.trim().to_string()
}

/// Takes the blocked signals with sigwait: SIGWINCH becomes a resize, the others go to
/// the process. Each on its own connection (the agent may be slow; a signal must not
/// wait behind another's time limit more than once). Before `released` (the VM boots at
/// start and has not), a signal ends the shim with 128+N instead: there is no process
/// yet to send it to.
fn spawn_signal_forwarder(
    args: &Args,
    set: SigSet,
    size_fd: Option<i32>,
    released: Arc<AtomicBool>,
) {
    let args = Args {
        uds: args.uds.clone(),
        container_id: args.container_id.clone(),
        exec_id: args.exec_id.clone(),
        stdin_port: None,
        stdout_port: None,
        stderr_port: None,
        console_socket: None,
        tty_inherit: false,
        go_fifo: None,
        dns_relay: None,
        log: args.log.clone(),
        log_json: args.log_json,
        debug: args.debug,
    };
    std::thread::spawn(move || loop {
        let Ok(sig) = set.wait() else {
            continue;
        };
        if sig == Signal::SIGWINCH {
            if released.load(Ordering::Acquire) {
                if let Some(fd) = size_fd {
                    resize(&args, fd);
                }
            }
            continue;
        }
        if !released.load(Ordering::Acquire) {
            tracing::debug!("{sig} before the VM booted: exiting");
            std::process::exit(128 + sig as i32);
        }
        tracing::debug!("forwarding {sig}");
        let r = agent::call_once(
            &args.uds,
            &Request::SignalProcess {
                container_id: args.container_id.clone(),
                exec_id: args.exec_id.clone(),
                signal: sig as i32,
                all: false,
            },
            agent::CALL_LIMIT,
        );
        if let Err(e) = r {
            tracing::warn!("forwarding {sig}: {e}");
        }
    });
}
