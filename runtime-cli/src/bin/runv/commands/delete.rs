//! `runv delete [--force]`: tears down the sandbox VM and removes all state.

use anyhow::{bail, Result};
use runv_runtime::sandbox::{self, Teardown};
use runv_runtime::state::Status;

use super::Ctx;

pub fn run(ctx: &Ctx, id: &str, force: bool) -> Result<i32> {
    let (locked, state) = ctx.root.open(id)?;
    let status = sandbox::status(&state);
    let how = match status {
        Status::Created | Status::Stopped => Teardown::Graceful,
        Status::Running | Status::Paused if force => Teardown::Kill,
        Status::Running | Status::Paused => bail!(
            "cannot delete container {id} that is not stopped: {}",
            status.as_str()
        ),
    };
    for w in sandbox::destroy(locked, &state, how)? {
        tracing::warn!("{w}");
    }
    Ok(0)
}
