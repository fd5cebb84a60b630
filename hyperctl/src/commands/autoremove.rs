//! `hyperctl __autoremove NAME`: the background half of `run -d --rm`. `run` starts it
//! in a session of its own with /dev/null as stdio once the container runs; it waits
//! until the container has stopped, then removes it as `hyperctl rm` does (VM, bundle,
//! log, record). The wait is on the container's init shim (the PID `runv state`
//! reports), which exits with the container's process; the state is read again after
//! every wake-up, so a recycled PID or a paused container cannot fool it.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::runv::Runv;

/// How long one wait lasts before the state is read again.
const RECHECK: Duration = Duration::from_secs(5);

pub fn autoremove(root: &Path, name: &str) -> Result<()> {
    let runv = Runv::new(root)?;
    loop {
        let state = match runv.call(&["state", name]) {
            Ok(s) => s,
            // Removed by someone else (`hyperctl rm -f`): nothing left to do.
            Err(e) if e.to_string().contains("does not exist") => return Ok(()),
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_str(&state)
            .with_context(|| format!("runv state {name}: not JSON: {state}"))?;
        match v["status"].as_str() {
            Some("stopped") => break,
            _ => match v["pid"].as_i64().filter(|&p| p > 0) {
                Some(pid) => wait_exit(pid as i32, RECHECK),
                None => std::thread::sleep(Duration::from_millis(200)),
            },
        }
    }
    super::rm::rm(root, name, false)
}

/// Waits up to `limit` for process `pid` to exit (pidfd + poll). Returns at once when the
/// process is gone already.
fn wait_exit(pid: i32, limit: Duration) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // ESRCH: gone already. Anything else (an old kernel): fall back to a short sleep.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            std::thread::sleep(Duration::from_millis(500));
        }
        return;
    }
    // SAFETY: fd is a fresh pidfd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the pidfd becomes readable when the process exits.
    unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as libc::c_int) };
}

/// Starts `hyperctl __autoremove NAME` detached from this process (new session,
/// stdio /dev/null, working directory /), so it outlives `hyperctl run -d`.
pub fn spawn(root: &Path, name: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the hyperctl binary")?;
    let root = std::path::absolute(root).with_context(|| format!("--root {}", root.display()))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir("/")
        .arg("--root")
        .arg(root)
        .arg("__autoremove")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting the --rm watcher of {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_process_to_exit_and_not_longer() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "sleep 0.3"])
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        wait_exit(child.id() as i32, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(20));
        child.wait().unwrap();
        // A process that is gone: returns at once.
        let start = std::time::Instant::now();
        wait_exit(child.id() as i32, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_running_process_is_waited_for_up_to_the_limit() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "sleep 30"])
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        wait_exit(child.id() as i32, Duration::from_millis(200));
        assert!(start.elapsed() >= Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
