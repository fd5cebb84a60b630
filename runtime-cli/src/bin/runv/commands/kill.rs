//! `runv kill [--all] ID [SIGNAL]`: signals the init (or every process) through the
//! agent. SIGKILL to a sandbox whose agent does not answer in time kills its VMM, which
//! takes every process of the container with it.

use agent_protocol::Request;
use anyhow::Result;
use runtime::sandbox::{self, vsock_path};
use runtime::signals::parse_signal;
use runtime::{agent, vmm};

use super::{require_running, Ctx};

pub fn run(ctx: &Ctx, id: &str, signal: Option<&str>, all: bool) -> Result<i32> {
    // As runc: an unknown container before a bad signal.
    let (locked, state) = ctx.root.open(id)?;
    let sig = parse_signal(signal.unwrap_or("SIGTERM"))?;
    require_running(sandbox::status(&state))?;
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
                vmm::kill(v, libc::SIGKILL);
                vmm::wait_gone(v, agent::TEARDOWN_LIMIT);
            }
            Ok(0)
        }
        Err(e) => {
            if e.agent_answer()
                .is_some_and(|a| a.code == agent_protocol::ErrorCode::InvalidState)
            {
                return Err(super::not_running());
            }
            Err(e.into())
        }
    }
}
