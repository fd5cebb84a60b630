//! `runv update`: new resource limits, applied by the agent to the container's cgroup
//! in the guest. `--resources FILE` (or `-` for stdin) is a LinuxResources JSON; the
//! flags are applied on top of it, as runc does. The VM's own size does not change.

use std::io::Read;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxResources;
use runv_agent_protocol::Request;
use runv_runtime::agent;
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::state::Status;
use serde_json::{json, Value};

use super::Ctx;
use crate::cli::UpdateArgs;

pub fn run(ctx: &Ctx, a: &UpdateArgs) -> Result<i32> {
    let resources = resources(a)?;
    let (locked, state) = ctx.root.open(&a.id)?;
    if sandbox::status(&state) == Status::Stopped {
        return Err(super::not_running());
    }
    super::require_vm(&state)?;
    agent::call_once(
        &vsock_path(&locked.dir),
        &Request::UpdateContainer {
            container_id: a.id.clone(),
            resources: Box::new(resources),
        },
        agent::CALL_LIMIT,
    )?;
    Ok(0)
}

fn resources(a: &UpdateArgs) -> Result<LinuxResources> {
    let mut v: Value = match a.resources.as_deref() {
        None => json!({}),
        Some(src) => {
            let mut text = String::new();
            if src == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading resources from stdin")?;
            } else {
                text = std::fs::read_to_string(src)
                    .with_context(|| format!("reading resources file {src}"))?;
            }
            serde_json::from_str(&text)
                .with_context(|| format!("--resources {src}: invalid JSON"))?
        }
    };
    if !v.is_object() {
        bail!("--resources: expected a JSON object (LinuxResources)");
    }
    let mut set = |section: &str, key: &str, value: Value| {
        if v.get(section).is_none() {
            v[section] = json!({});
        }
        v[section][key] = value;
    };
    if let Some(m) = &a.memory {
        set("memory", "limit", json!(bytes("--memory", m)?));
    }
    if let Some(m) = &a.memory_swap {
        set("memory", "swap", json!(bytes("--memory-swap", m)?));
    }
    if let Some(m) = &a.memory_reservation {
        set(
            "memory",
            "reservation",
            json!(bytes("--memory-reservation", m)?),
        );
    }
    if let Some(s) = a.cpu_shares {
        set("cpu", "shares", json!(s));
    }
    if let Some(q) = a.cpu_quota {
        set("cpu", "quota", json!(q));
    }
    if let Some(p) = a.cpu_period {
        set("cpu", "period", json!(p));
    }
    if let Some(c) = &a.cpuset_cpus {
        set("cpu", "cpus", json!(c));
    }
    if let Some(m) = &a.cpuset_mems {
        set("cpu", "mems", json!(m));
    }
    if let Some(p) = a.pids_limit {
        set("pids", "limit", json!(p));
    }
    if let Some(w) = a.blkio_weight {
        set("blockIO", "weight", json!(w));
    }
    serde_json::from_value(v).context("--resources: not a valid LinuxResources object")
}

/// `64m`, `1g`, `512k`, `1048576`, `-1` (unlimited).
fn bytes(flag: &str, s: &str) -> Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 0)
        .with_context(|| format!("{flag} {s:?}: expected bytes, optionally with k, m, g or t"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> UpdateArgs {
        match crate::cli::Cli::try_parse_from(["runv", "update"].iter().chain(v.iter()).copied())
            .unwrap()
            .command
        {
            crate::cli::Command::Update(u) => *u,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_become_resources() {
        let r = resources(&args(&[
            "--memory",
            "64m",
            "--cpu-quota",
            "50000",
            "--cpu-period",
            "100000",
            "--pids-limit",
            "10",
            "c",
        ]))
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
    }

    #[test]
    fn file_plus_flags_and_bad_values() {
        let t = std::env::temp_dir().join(format!("runv-update-{}.json", std::process::id()));
        std::fs::write(&t, r#"{"memory": {"limit": 1000}, "pids": {"limit": 5}}"#).unwrap();
        let r = resources(&args(&[
            "-r",
            t.to_str().unwrap(),
            "--pids-limit",
            "7",
            "c",
        ]))
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(1000));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 7);
        std::fs::write(&t, "[1]").unwrap();
        assert!(resources(&args(&["-r", t.to_str().unwrap(), "c"])).is_err());
        std::fs::remove_file(&t).unwrap();
        let e = resources(&args(&["--memory", "lots", "c"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--memory \"lots\""), "{e}");
        assert_eq!(bytes("--memory", "1g").unwrap(), 1 << 30);
        assert_eq!(bytes("--memory", "-1").unwrap(), -1);
    }
}
