//! `hyperctl rm [-f] NAME`: delete runv's container (its VM) and the bundle, log and
//! record. A running container is refused unless `-f`, which kills it.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::containers::Containers;
use crate::runv::Runv;

pub fn rm(root: &Path, name: &str, force: bool) -> Result<()> {
    let containers = Containers::new(root);
    if let Err(e) = containers.load(name) {
        // A run killed while it prepared its bundle leaves a directory without a record;
        // rm frees its name. Anything else is no container.
        if !containers.is_reserved(name) {
            return Err(e);
        }
    }
    let runv = Runv::new(root)?;
    let status = runv.status(name)?;
    if !force && matches!(status.as_deref(), Some("running" | "paused")) {
        bail!("container {name} is running: stop it first (hyperctl stop {name}) or use rm -f");
    }
    runv.delete(name, force || status.as_deref() == Some("created"))
        .with_context(|| format!("removing container {name}"))?;
    containers.remove(name)?;
    println!("{name}");
    Ok(())
}
