//! `runv run`: create + start, then (without `--detach`) wait for the init's shim and
//! exit with its status. Signals runv receives meanwhile go to the shim, which forwards
//! them to the process.

use anyhow::Result;
use nix::sys::signal::{SigSet, Signal};
use runtime::sandbox::{self, Teardown};

use super::{exit_code, Ctx};
use crate::cli::CreateArgs;

pub fn run(ctx: &Ctx, a: &CreateArgs, detach: bool) -> Result<i32> {
    // Block the forwarded signals before any thread or child exists, so that a
    // dedicated thread can take them with sigwait; children get the default mask back.
    let forwarded = runtime::signals::forwarded_signals();
    let mut set = SigSet::empty();
    if !detach {
        for s in &forwarded {
            set.add(*s);
        }
        set.thread_block()?;
    }
    let created = super::create::create(ctx, a, !detach)?;
    if let Err(e) = super::start::start(ctx, &a.id) {
        if let Ok((locked, state)) = ctx.root.open(&a.id) {
            drop(created);
            let _ = sandbox::destroy(locked, &state, Teardown::Kill);
        }
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let sandbox::Created {
        locked, mut shim, ..
    } = created;
    // Other runv calls (kill, state, delete) must not wait for this one.
    drop(locked);
    let pid = shim.pid();
    std::thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            if sig != Signal::SIGCHLD {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
        }
    });
    let status = shim.child.wait()?;
    Ok(exit_code(status))
}
