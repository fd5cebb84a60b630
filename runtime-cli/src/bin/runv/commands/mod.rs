//! One verb per file. Each returns the exit status, or an error (exit status 1).

mod check;
mod create;
mod delete;
mod events;
mod exec;
mod features;
mod kill;
mod list;
mod pause;
mod ps;
mod run;
mod spec;
mod start;
mod state;
mod update;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use runv_runtime::config::{self, RuntimeConfig, Sources};
use runv_runtime::state::{Root, Status};

use crate::cli::{Cli, Command, GlobalOpts};

/// What every verb gets.
pub struct Ctx<'a> {
    pub root: Root,
    pub global: &'a GlobalOpts,
}

impl Ctx<'_> {
    pub fn runtime_config(&self) -> Result<RuntimeConfig> {
        Ok(config::resolve(&Sources::from_env(
            self.global.config.clone(),
        ))?)
    }

    /// runv-shim: `RUNV_SHIM`, else next to this binary.
    pub fn shim_exe(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("RUNV_SHIM").filter(|v| !v.is_empty()) {
            return Ok(p.into());
        }
        let exe = std::env::current_exe().context("locating the runv binary")?;
        let p = exe.with_file_name("runv-shim");
        if !p.is_file() {
            bail!(
                "runv-shim not found at {} (install it next to runv, or set RUNV_SHIM)",
                p.display()
            );
        }
        Ok(p)
    }

    pub fn log_json(&self) -> bool {
        self.global.log_format == crate::cli::LogFormat::Json
    }
}

pub fn dispatch(cli: &Cli) -> Result<i32> {
    let ctx = Ctx {
        root: Root::new(&cli.global.root),
        global: &cli.global,
    };
    match &cli.command {
        Command::Create(a) => create::run(&ctx, a),
        Command::Start { id } => start::run(&ctx, id),
        Command::Run {
            detach,
            keep,
            create: a,
        } => run::run(&ctx, a, *detach, *keep),
        Command::State { id } => state::run(&ctx, id),
        Command::Kill { all, id, signal } => kill::run(&ctx, id, signal.as_deref(), *all),
        Command::Delete { force, id } => delete::run(&ctx, id, *force),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps::run(&ctx, id, *format, ps_args),
        Command::List { format, quiet } => list::run(&ctx, *format, *quiet),
        Command::Pause { id } => pause::run(&ctx, id, true),
        Command::Resume { id } => pause::run(&ctx, id, false),
        Command::Events {
            stats,
            interval,
            id,
        } => events::run(&ctx, id, *stats, interval),
        Command::Update(a) => update::run(&ctx, a),
        Command::Features => features::run(),
        Command::Check => check::run(&ctx),
        Command::Spec { bundle } => spec::run(
            bundle.as_deref(),
            cli.global.rootless.as_deref().is_some_and(|v| v == "true"),
        ),
    }
}

/// runc's text for a verb that needs a live container.
pub fn not_running() -> anyhow::Error {
    anyhow::anyhow!("container not running")
}

/// Fails when the sandbox's VM has not booted yet (its network namespace was not final
/// at create, so it boots at `start`): nothing runs in it to talk to.
pub fn require_vm(state: &runv_runtime::state::State) -> Result<()> {
    if state.vmm.is_none() {
        anyhow::bail!(
            "container not running: its VM boots at start (the network namespace was not \
             final at create)"
        );
    }
    Ok(())
}

/// Fails unless `status` is one of `allowed`, with runc's "container not running".
pub fn require_running(status: Status) -> Result<()> {
    match status {
        Status::Running | Status::Paused | Status::Created => Ok(()),
        Status::Stopped => Err(not_running()),
    }
}

/// Writes a pid file atomically, as runc does (temp file + rename).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(
        ".{}.tmp",
        abs.file_name().and_then(|n| n.to_str()).unwrap_or("pid")
    ));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("writing pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, &abs).with_context(|| format!("writing pid file {}", abs.display()))?;
    Ok(())
}

/// The exit status of a finished child, as a shell reports it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}
