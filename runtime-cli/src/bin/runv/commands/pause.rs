//! `runv pause` / `runv resume`: the guest freezes or thaws the container's cgroup.

use anyhow::{bail, Result};
use runv_agent_protocol::Request;
use runv_runtime::agent;
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::state::Status;

use super::Ctx;

pub fn run(ctx: &Ctx, id: &str, pause: bool) -> Result<i32> {
    let (locked, mut state) = ctx.root.open(id)?;
    let status = sandbox::status(&state);
    let request = if pause {
        if status != Status::Running {
            return Err(super::not_running());
        }
        Request::PauseContainer {
            container_id: id.into(),
        }
    } else {
        if status != Status::Paused {
            bail!("container not paused");
        }
        Request::ResumeContainer {
            container_id: id.into(),
        }
    };
    super::require_vm(&state)?;
    agent::call_once(&vsock_path(&locked.dir), &request, agent::CALL_LIMIT)?;
    state.status = if pause {
        Status::Paused
    } else {
        Status::Running
    };
    locked.save(&state)?;
    Ok(0)
}
