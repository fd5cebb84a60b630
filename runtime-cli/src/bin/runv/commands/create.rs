//! `runv create`: a sandbox VM with the container created in it, waiting for `start`.

use anyhow::{bail, Result};
use runv_runtime::sandbox::{self, CreateOptions, Created, Teardown};

use super::{write_pid_file, Ctx};
use crate::cli::CreateArgs;

pub fn run(ctx: &Ctx, a: &CreateArgs) -> Result<i32> {
    let created = create(ctx, a, false)?;
    drop(created);
    Ok(0)
}

/// Creates the container; `foreground` is `run` without `--detach`.
pub fn create(ctx: &Ctx, a: &CreateArgs, foreground: bool) -> Result<Created> {
    if a.preserve_fds > 0 {
        bail!(
            "--preserve-fds {}: file descriptors cannot be passed into the container's VM",
            a.preserve_fds
        );
    }
    let config = ctx.runtime_config()?;
    let opts = CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        foreground,
        config,
        shim_exe: ctx.shim_exe()?,
        log: ctx.global.log.clone(),
        log_json: ctx.log_json(),
        debug: ctx.global.debug,
    };
    let created = sandbox::create(&ctx.root, &opts)?;
    for w in &created.warnings {
        tracing::warn!("{w}");
    }
    if let Some(p) = &a.pid_file {
        if let Err(e) = write_pid_file(p, created.shim.pid()) {
            let Created { locked, state, .. } = created;
            let _ = sandbox::destroy(locked, &state, Teardown::Kill);
            return Err(e);
        }
    }
    Ok(created)
}
