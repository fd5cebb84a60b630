//! `hyperctl logs NAME`: what a detached container wrote (stdout and stderr, in order).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::containers::Containers;

pub fn logs(root: &Path, name: &str) -> Result<()> {
    let containers = Containers::new(root);
    let rec = containers.load(name)?;
    if !rec.detached {
        bail!("container {name} ran in the foreground: its output went to the terminal, there is no log");
    }
    let path = containers.log(name);
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut f, &mut std::io::stdout().lock())
        .with_context(|| format!("copying {}", path.display()))?;
    Ok(())
}
