//! `runv events`: runc's JSON event lines. With `--stats` one stats event, else one
//! every `--interval` until the container stops.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use runv_agent_protocol::{Request, Response};
use runv_runtime::agent;
use runv_runtime::oci::stats_event;
use runv_runtime::sandbox::{self, vsock_path};
use runv_runtime::state::Status;

use super::Ctx;

pub fn run(ctx: &Ctx, id: &str, once: bool, interval: &str) -> Result<i32> {
    let every = parse_interval(interval)?;
    loop {
        let (locked, state) = ctx.root.open(id)?;
        if sandbox::status(&state) == Status::Stopped {
            if once {
                return Err(super::not_running());
            }
            return Ok(0);
        }
        super::require_vm(&state)?;
        let uds = vsock_path(&locked.dir);
        drop(locked);
        let stats = match agent::call_once(
            &uds,
            &Request::Stats {
                container_id: id.into(),
            },
            agent::CALL_LIMIT,
        )? {
            Response::Stats { stats } => stats,
            other => bail!("agent answered {} to stats", other.kind()),
        };
        println!("{}", stats_event(id, &stats));
        if once {
            return Ok(0);
        }
        std::thread::sleep(every);
    }
}

/// `5s`, `500ms`, `1m`, or plain seconds.
fn parse_interval(s: &str) -> Result<Duration> {
    let bad = || format!("--interval {s:?}: expected a duration such as 5s or 500ms");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().ok().with_context(bad)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!(bad()),
    };
    if secs <= 0.0 || !secs.is_finite() {
        bail!(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "0s", "5x", "s", "-1s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
