//! `runv run`: create + start, then (without `--detach`) wait for the init's shim, delete
//! the container (unless `--keep`, as runc) and exit with the process's status. Signals
//! runv receives meanwhile go to the shim, which forwards them to the process.

use anyhow::Result;
use nix::sys::signal::{SigSet, Signal};
use runv_runtime::sandbox::{self, Teardown};

use super::{exit_code, Ctx};
use crate::cli::CreateArgs;

pub fn run(ctx: &Ctx, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let sandbox::Created {
        locked, mut shim, ..
    } = super::create::create(ctx, a, !detach)?;
    // `start` takes the lock itself, and other runv calls (kill, state, delete) must not
    // wait for this one.
    drop(locked);
    if let Err(e) = super::start::start(ctx, &a.id) {
        if let Ok((locked, state)) = ctx.root.open(&a.id) {
            let _ = sandbox::destroy(locked, &state, Teardown::Kill);
        }
        let _ = shim.child.wait();
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    // Only now, with the VMM and the shim started: a child must not inherit a blocked
    // mask (the VMM kicks its vCPU threads with signals).
    let mut set = SigSet::empty();
    for s in runv_runtime::signals::forwarded_signals() {
        set.add(s);
    }
    set.thread_block()?;
    let pid = shim.pid();
    std::thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            if sig != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
        }
    });
    let status = shim.child.wait()?;
    if !keep {
        let (locked, state) = ctx.root.open(&a.id)?;
        for w in sandbox::destroy(locked, &state, Teardown::Graceful)? {
            tracing::warn!("{w}");
        }
    }
    Ok(exit_code(status))
}
