//! `runv kill [--all] ID [SIGNAL]`: signals the init (or every process) through the
//! agent. SIGKILL to a sandbox whose agent does not answer in time kills its VMM, which
//! takes every process of the container with it.

use anyhow::Result;
use runv_agent_protocol::Request;
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::signals::parse_signal;
use runv_runtime::{agent, vmm};

use super::{require_running, Ctx};

pub fn run(ctx: &Ctx, id: &str, signal: Option<&str>, all: bool) -> Result<i32> {
    // As runc: an unknown container before a bad signal.
    let (locked, state) = ctx.root.open(id)?;
    let sig = parse_signal(signal.unwrap_or("SIGTERM"))?;
    require_running(sandbox::status(&state))?;
    if state.vmm.is_none() {
        // The VM boots at start: the process does not exist yet, its shim stands for it
        // and ends with 128+N on the signal, as the process would have.
        if let Some(init) = state.init.filter(|p| p.alive()) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init.pid),
                nix::sys::signal::Signal::try_from(sig)?,
            )?;
        }
        return Ok(0);
    }
    let uds = vsock_path(&locked.dir);
    let request = Request::SignalProcess {
        container_id: id.into(),
        exec_id: None,
        signal: sig,
        all,
    };
    let limit = if sig == libc::SIGKILL {
        agent::TEARDOWN_LIMIT
    } else {
        agent::CALL_LIMIT
    };
    match agent::call_once(&uds, &request, limit) {
        Ok(_) => Ok(0),
        Err(e) if sig == libc::SIGKILL && e.agent_answer().is_none() => {
            tracing::warn!("the agent did not take SIGKILL ({e}); killing the sandbox VM");
            if let Some(v) = &state.vmm {
                vmm::stop(v, agent::TEARDOWN_LIMIT);
            }
            Ok(0)
        }
        Err(e) => {
            if e.agent_answer()
                .is_some_and(|a| a.code == runv_agent_protocol::ErrorCode::InvalidState)
            {
                return Err(super::not_running());
            }
            Err(e.into())
        }
    }
}
