//! `runv exec`: another process in the container, with its own runv-shim. The process
//! is the container's spec process (env, user, capabilities, rlimits, ...) with the
//! command line's changes, as runc builds it, or `--process FILE` as given.

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Capability, Process};
use runv_agent_protocol::Request;
use runv_runtime::agent;
use runv_runtime::sandbox::{self, shim_log, tty_mode, vsock_path};
use runv_runtime::shim::{self, ShimSpec};
use runv_runtime::state::{ExecRecord, HostProcess, Status};

use super::{exit_code, write_pid_file, Ctx};
use crate::cli::ExecArgs;

pub fn run(ctx: &Ctx, a: &ExecArgs) -> Result<i32> {
    if a.preserve_fds > 0 {
        bail!(
            "--preserve-fds {}: file descriptors cannot be passed into the container's VM",
            a.preserve_fds
        );
    }
    let (locked, mut state) = ctx.root.open(&a.id)?;
    match sandbox::status(&state) {
        Status::Stopped => bail!("cannot exec in a stopped container"),
        Status::Paused if !a.ignore_paused => bail!("cannot exec in a paused container"),
        _ => {}
    }
    super::require_vm(&state)?;
    let process = build_process(a, state.process.clone())?;
    let terminal = process.terminal().unwrap_or(false);
    let tty = tty_mode(terminal, a.console_socket.as_deref(), !a.detach)?;
    let exec_id = format!(
        "exec-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let first = state.take_ports(if terminal { 2 } else { 3 });
    let (ports, _) = shim::ports_for(first, terminal)?;
    state.execs.retain(|e| e.shim.alive());
    locked.save(&state)?;
    let uds = vsock_path(&locked.dir);
    let spec = ShimSpec {
        uds: uds.clone(),
        container_id: a.id.clone(),
        exec_id: Some(exec_id.clone()),
        ports,
        tty,
        log: shim_log(&locked.dir, ctx.global.log.as_deref()),
        go_fifo: None,
        dns_relay: None,
        log_json: ctx.log_json(),
        debug: ctx.global.debug,
    };
    let netns = match state.shim_netns.as_deref() {
        Some(p) => shim::ShimNetns::Join(p),
        None => shim::ShimNetns::Inherit,
    };
    let mut shim = shim::spawn(&ctx.shim_exe()?, &spec, netns)?;
    runv_runtime::cgroups::join(&state.cgroup_dirs, shim.pid());
    let request = Request::ExecProcess {
        container_id: a.id.clone(),
        exec_id: exec_id.clone(),
        process: Box::new(process),
        stdio: ports,
    };
    if let Err(e) = agent::call_once(&uds, &request, agent::CREATE_LIMIT) {
        shim.abort();
        return Err(e.into());
    }
    if let Some(p) = HostProcess::of(shim.pid()) {
        state.execs.push(ExecRecord { exec_id, shim: p });
    }
    locked.save(&state)?;
    drop(locked);
    shim.go()?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, shim.pid())?;
    }
    if a.detach {
        return Ok(0);
    }
    let status = shim.child.wait().context("waiting for runv-shim")?;
    Ok(exit_code(status))
}

/// The exec'd process: `--process FILE`, else the spec's process changed by the flags.
fn build_process(a: &ExecArgs, base: Option<Process>) -> Result<Process> {
    if let Some(path) = &a.process {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let p: Process = serde_json::from_slice(&text)
            .with_context(|| format!("{}: invalid process JSON", path.display()))?;
        return Ok(p);
    }
    if a.command.is_empty() {
        bail!(
            "exec: the command is missing (runv exec [options] <container-id> <command> [args...])"
        );
    }
    let mut p = base.unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        if !kv.contains('=') {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.into());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("--user {u:?}: the uid must be a number"))?;
        let mut user = p.user().clone();
        user.set_uid(uid);
        if let Some(g) = gid {
            user.set_gid(
                g.parse()
                    .with_context(|| format!("--user {u:?}: the gid must be a number"))?,
            );
        }
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for c in &a.cap {
            let name = c.to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
            let cap: Capability =
                serde_json::from_value(serde_json::Value::String(format!("CAP_{name}")))
                    .map_err(|_| anyhow::anyhow!("--cap {c:?}: unknown capability"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> ExecArgs {
        match crate::cli::Cli::try_parse_from(["runv", "exec"].iter().chain(v.iter()).copied())
            .unwrap()
            .command
        {
            crate::cli::Command::Exec(e) => *e,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_change_the_spec_process() {
        let base = Process::default();
        let p = build_process(
            &args(&[
                "-e",
                "PATH=/x",
                "-e",
                "A=1",
                "--cwd",
                "/tmp",
                "-u",
                "1000:2000",
                "--cap",
                "net_admin",
                "c",
                "ls",
                "-l",
            ]),
            Some(base),
        )
        .unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["ls", "-l"]);
        let env = p.env().clone().unwrap();
        assert!(env.contains(&"PATH=/x".to_string()) && env.contains(&"A=1".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 2000));
        assert!(p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap()
            .contains(&Capability::NetAdmin));
        assert_eq!(p.terminal(), Some(false));
    }

    #[test]
    fn bad_flags_are_named() {
        for (v, needle) in [
            (vec!["-u", "bob", "c", "ls"], "--user"),
            (vec!["-e", "NOEQUALS", "c", "ls"], "--env"),
            (vec!["--cap", "CAP_NOPE", "c", "ls"], "--cap"),
            (vec!["c"], "command is missing"),
        ] {
            let e = build_process(&args(&v), None).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
