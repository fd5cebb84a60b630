//! `runv start`: boots the sandbox's VM if create left that to start (its network
//! namespace was not final then), lets the init run, then the startContainer and
//! poststart hooks.

use anyhow::{bail, Context, Result};
use runv_agent_protocol::Request;
use runv_runtime::agent;
use runv_runtime::hooks::run_hooks;
use runv_runtime::oci::hook_state;
use runv_runtime::sandbox::boot::{self, BootPlan};
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::shim;
use runv_runtime::state::Status;

use super::Ctx;

pub fn run(ctx: &Ctx, id: &str) -> Result<i32> {
    start(ctx, id)?;
    Ok(0)
}

pub fn start(ctx: &Ctx, id: &str) -> Result<()> {
    let (locked, mut state) = ctx.root.open(id)?;
    match sandbox::status(&state) {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        Status::Running | Status::Paused => bail!("cannot start an already running container"),
    }
    if state.vmm.is_none() {
        // The namespace is final now: boot, then let the init's shim go.
        let fifo = locked.dir.join("go");
        let booted =
            BootPlan::load(&locked.dir).and_then(|plan| boot::boot(&locked.dir, &mut state, &plan));
        let booted = match booted {
            Ok(b) => b,
            Err(e) => {
                // The shim ends (exit 1) and the container is stopped; delete cleans up.
                let _ = shim::release(&fifo, "fail");
                return Err(e).context("booting the container's VM");
            }
        };
        for w in &booted.warnings {
            tracing::warn!("{w}");
        }
        locked.save(&state)?;
        // No shim to take the process (it was killed meanwhile): the container is
        // stopped, and delete tears the VM down with the rest.
        shim::release(&fifo, "go").context("starting the container")?;
        // runv-vmm belongs to the state from here on; it outlives this call.
        drop(booted);
    }
    let uds = vsock_path(&locked.dir);
    agent::call_once(
        &uds,
        &Request::StartContainer {
            container_id: id.into(),
        },
        agent::CALL_LIMIT,
    )?;
    state.status = Status::Running;
    locked.save(&state)?;
    if let Some(h) = &state.hooks {
        let hs = hook_state(&state, Status::Running);
        run_hooks(
            "startContainer",
            h.start_container().as_deref().unwrap_or_default(),
            &hs,
        )?;
        run_hooks(
            "poststart",
            h.poststart().as_deref().unwrap_or_default(),
            &hs,
        )?;
    }
    Ok(())
}
