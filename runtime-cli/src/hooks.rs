//! OCI hooks, run on the host as runc runs them: `path` executed with `args` (args[0]
//! is argv[0]) and exactly `env`, the container's state JSON on stdin, killed after
//! `timeout` seconds. A hook that fails (non-zero exit, signal, time limit, cannot be
//! started) is an error naming the hook.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook #{index} ({path}): cannot start: {source}")]
    Start {
        stage: &'static str,
        index: usize,
        path: String,
        source: std::io::Error,
    },
    #[error("{stage} hook #{index} ({path}): {status}{stderr}")]
    Failed {
        stage: &'static str,
        index: usize,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{stage} hook #{index} ({path}): timed out after {secs} s")]
    TimedOut {
        stage: &'static str,
        index: usize,
        path: String,
        secs: i64,
    },
}

/// Runs `hooks` in order with `state_json` on each one's stdin; stops at the first
/// failure.
pub fn run_hooks(stage: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_hook(stage, index, hook, state_json)?;
    }
    Ok(())
}

fn run_hook(stage: &'static str, index: usize, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    tracing::debug!(stage, index, path, "running hook");
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let stderr_file = tempfile_for_stderr();
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    match &stderr_file {
        Some(f) => {
            if let Ok(clone) = f.try_clone() {
                cmd.stderr(clone);
            }
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        stage,
        index,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook need not read its stdin (a broken pipe is fine), and a hook that never
        // reads must not block the time limit: write from a thread.
        let state = state.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&state);
        });
    }
    let limit = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Start {
                    stage,
                    index,
                    path,
                    source,
                })
            }
        }
        if limit.is_some_and(|l| started.elapsed() >= l) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::TimedOut {
                stage,
                index,
                path,
                secs: hook.timeout().unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    };
    let stderr = stderr_file
        .map(|f| read_tail(f, 1024))
        .filter(|s| !s.trim().is_empty())
        .map(|s| format!(", stderr: {}", s.trim()))
        .unwrap_or_default();
    Err(HookError::Failed {
        stage,
        index,
        path,
        status,
        stderr,
    })
}

/// An anonymous file for a hook's stderr (shown in the error when it fails).
fn tempfile_for_stderr() -> Option<std::fs::File> {
    let name = c"runv-hook-stderr";
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .ok()
        .map(std::fs::File::from)
}

fn read_tail(mut f: std::fs::File, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::HookBuilder;

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".to_string(), script.to_string()])
            .env(vec!["FOO=bar".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn state_on_stdin_and_exact_env() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let h = hook(
            &format!(
                "cat > {0}; echo \"$FOO:${{HOME-unset}}\" >> {0}",
                out.display()
            ),
            None,
        );
        run_hooks("prestart", &[h], br#"{"id":"c1"}"#).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c1\"}bar:unset\n"
        );
    }

    #[test]
    fn failure_names_the_hook_and_status() {
        let ok = hook("true", None);
        let bad = hook("echo broken >&2; exit 3", None);
        let e = run_hooks("createRuntime", &[ok, bad], b"{}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("createRuntime hook #1 (/bin/sh): exit status 3"),
            "{e}"
        );
        assert!(e.contains("broken"), "{e}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let start = Instant::now();
        let e = run_hooks("poststart", &[hook("sleep 10", Some(1))], b"{}").unwrap_err();
        assert!(matches!(e, HookError::TimedOut { secs: 1, .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_binary() {
        let h = HookBuilder::default()
            .path("/nonexistent/hook")
            .build()
            .unwrap();
        let e = run_hooks("prestart", &[h], b"{}").unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/hook") && e.contains("cannot start"),
            "{e}"
        );
    }

    #[test]
    fn a_hook_that_ignores_stdin() {
        let big = vec![b'x'; 1 << 20];
        run_hooks("prestart", &[hook("exit 0", None)], &big).unwrap();
    }
}
