//! `hyperctl load -i FILE`: import an archive or OCI layout into the store, as
//! `docker load` does.

use std::path::Path;

use anyhow::{Context, Result};
use image::{import_path, ImportOptions};

pub fn load(root: &Path, input: &Path) -> Result<()> {
    let store = super::open_store(root)?;
    std::fs::metadata(input).with_context(|| format!("image archive {}", input.display()))?;
    let imported = import_path(&store, input, &ImportOptions::default())
        .with_context(|| format!("loading {}", input.display()))?;
    for name in &imported.names {
        println!("Loaded image: {name}");
    }
    if imported.names.is_empty() {
        println!("Loaded image ID: {}", imported.record.manifest);
    }
    Ok(())
}
