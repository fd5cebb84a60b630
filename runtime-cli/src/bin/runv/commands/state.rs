//! `runv state`: the OCI state JSON.

use anyhow::Result;
use runv_runtime::oci::OciState;
use runv_runtime::sandbox;

use super::Ctx;

pub fn run(ctx: &Ctx, id: &str) -> Result<i32> {
    let (_locked, state) = ctx.root.open(id)?;
    let out = OciState::new(&state, sandbox::status(&state));
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
