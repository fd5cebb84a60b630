//! `runv features`.

use anyhow::Result;

pub fn run() -> Result<i32> {
    println!(
        "{}",
        serde_json::to_string_pretty(&runv_runtime::oci::features())?
    );
    Ok(0)
}
