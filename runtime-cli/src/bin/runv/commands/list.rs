//! `runv list`: every container under --root.

use anyhow::Result;
use runtime::oci::OciState;
use runtime::sandbox;

use super::Ctx;
use crate::cli::ListFormat;

pub fn run(ctx: &Ctx, format: ListFormat, quiet: bool) -> Result<i32> {
    let mut states = Vec::new();
    for id in ctx.root.list()? {
        // A container deleted meanwhile is skipped.
        if let Ok((_l, s)) = ctx.root.open(&id) {
            states.push(OciState::new(&s, sandbox::status(&s)));
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(0);
    }
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string(&states)?),
        ListFormat::Table => {
            println!(
                "{:<12}{:<12}{:<12}{:<12}{:<33}{}",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"
            );
            for s in &states {
                println!(
                    "{:<12}{:<12}{:<12}{:<12}{:<33}{}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created,
                    s.owner
                );
            }
        }
    }
    Ok(0)
}
