//! `runv ps`: the container's processes. These are guest PIDs (the processes run in
//! the VM); the host has no such processes.

use agent_protocol::{Request, Response};
use anyhow::{bail, Result};
use runtime::agent;
use runtime::sandbox::{self, vsock_path};
use runtime::state::Status;

use super::Ctx;
use crate::cli::ListFormat;

pub fn run(ctx: &Ctx, id: &str, format: ListFormat) -> Result<i32> {
    let (locked, state) = ctx.root.open(id)?;
    if sandbox::status(&state) == Status::Stopped {
        return Err(super::not_running());
    }
    let uds = vsock_path(&locked.dir);
    drop(locked);
    let pids = match agent::call_once(
        &uds,
        &Request::ListProcesses {
            container_id: id.into(),
        },
        agent::CALL_LIMIT,
    )? {
        Response::Processes { pids } => pids,
        other => bail!("agent answered {} to list_processes", other.kind()),
    };
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string(&pids)?),
        ListFormat::Table => {
            println!("PID");
            for p in pids {
                println!("{p}");
            }
        }
    }
    Ok(0)
}
