//! `hyperctl stop [-t SECS] NAME`: SIGTERM, then SIGKILL when the container has not
//! exited after SECS, as `docker stop`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::containers::Containers;
use crate::runv::Runv;

/// How long to wait for the exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(30);

pub fn stop(root: &Path, name: &str, grace: u64) -> Result<()> {
    Containers::new(root).load(name)?;
    let runv = Runv::new(root)?;
    if !is_live(&runv, name)? {
        println!("{name}");
        return Ok(());
    }
    signal(&runv, name, "TERM")?;
    if !wait_exit(&runv, name, Duration::from_secs(grace))? {
        tracing::info!(container = name, "still running after {grace} s: SIGKILL");
        signal(&runv, name, "KILL")?;
        if !wait_exit(&runv, name, KILL_WAIT)? {
            bail!(
                "container {name} did not exit {} s after SIGKILL",
                KILL_WAIT.as_secs()
            );
        }
    }
    println!("{name}");
    Ok(())
}

fn is_live(runv: &Runv, name: &str) -> Result<bool> {
    Ok(matches!(
        runv.status(name)?.as_deref(),
        Some("running" | "created" | "paused")
    ))
}

fn signal(runv: &Runv, name: &str, sig: &str) -> Result<()> {
    match runv.call(&["kill", name, sig]) {
        Ok(_) => Ok(()),
        // It exited in between.
        Err(_) if !is_live(runv, name)? => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stopping {name}")),
    }
}

/// Polls `runv state` until the container is not live; false on timeout.
fn wait_exit(runv: &Runv, name: &str, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if !is_live(runv, name)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
