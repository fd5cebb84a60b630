//! `runv start`: lets a created container's init run, then the startContainer and
//! poststart hooks.

use agent_protocol::Request;
use anyhow::{bail, Result};
use runtime::agent;
use runtime::hooks::run_hooks;
use runtime::oci::hook_state;
use runtime::sandbox::{self, vsock_path};
use runtime::state::Status;

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
