//! One file per verb. `pull` (registry) writes into the same store as `load`, through
//! the store's digest-checked blob writer.

mod autoremove;
mod images;
mod load;
mod logs;
mod ps;
mod pull;
mod rm;
mod rmi;
mod run;
mod stop;

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command};

/// Runs the command; returns the exit code.
pub fn dispatch(cli: &Cli) -> Result<i32> {
    let root = cli.root.as_path();
    match &cli.command {
        Command::Run(a) => run::run(root, a),
        Command::Load { input } => load::load(root, input).map(|()| 0),
        Command::Pull {
            insecure,
            platform,
            image,
        } => pull::pull(root, image, *insecure, platform.as_deref()),
        Command::Images => images::images(root).map(|()| 0),
        Command::Rmi { image } => rmi::rmi(root, image).map(|()| 0),
        Command::Ps { all } => ps::ps(root, *all).map(|()| 0),
        Command::Logs { name } => logs::logs(root, name).map(|()| 0),
        Command::Stop { time, name } => stop::stop(root, name, *time).map(|()| 0),
        Command::Rm { force, name } => rm::rm(root, name, *force).map(|()| 0),
        Command::Autoremove { name } => autoremove::autoremove(root, name).map(|()| 0),
    }
}

/// The image store of a hyperctl root.
pub fn open_store(root: &Path) -> Result<runv_image::Store> {
    let dir = root.join("images");
    runv_image::Store::open(&dir)
        .with_context(|| format!("opening the image store {}", dir.display()))
}

/// A child's exit code; 128+N when a signal killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// "3 minutes ago"-style age of an RFC 3339 time, as docker prints.
pub fn age(rfc3339: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let s = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        86400..=2_591_999 => (s / 86400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Prints rows as left-aligned columns separated by three spaces (docker's tables).
pub fn print_table(rows: &[Vec<String>]) {
    print!("{}", table(rows));
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(age("2026-01-10T00:00:00Z", now), "0 seconds ago");
        assert_eq!(age("2026-01-09T23:59:00Z", now), "1 minute ago");
        assert_eq!(age("2026-01-09T21:00:00Z", now), "3 hours ago");
        assert_eq!(age("2026-01-01T00:00:00Z", now), "9 days ago");
        assert_eq!(age("2000-01-01T00:00:00Z", now), "26 years ago");
        assert_eq!(age("garbage", now), "garbage");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["NAME".into(), "STATUS".into(), "X".into()],
            vec!["a-long-name".into(), "up".into(), "1".into()],
        ];
        assert_eq!(
            table(&rows),
            "NAME          STATUS   X\na-long-name   up       1\n"
        );
    }

    #[test]
    fn exit_codes() {
        let st = std::process::Command::new("sh")
            .args(["-c", "exit 42"])
            .status()
            .unwrap();
        assert_eq!(exit_code(st), 42);
        let st = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(exit_code(st), 137);
    }
}
