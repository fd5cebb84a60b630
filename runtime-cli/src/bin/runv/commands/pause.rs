//! `runv pause` / `runv resume`: the guest freezes or thaws the container's cgroup.

use agent_protocol::Request;
use anyhow::{bail, Result};
use runtime::agent;
use runtime::sandbox::{self, vsock_path};
use runtime::state::Status;

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
    agent::call_once(&vsock_path(&locked.dir), &request, agent::CALL_LIMIT)?;
    state.status = if pause {
        Status::Paused
    } else {
        Status::Running
    };
    locked.save(&state)?;
    Ok(0)
}
