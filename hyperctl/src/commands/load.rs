//! `hyperctl load -i FILE`: import an archive or OCI layout into the store, as
//! `docker load` does. The layers are extracted right away (the store would otherwise do
//! it on first use), so that a broken or hostile layer fails the load, not a later run,
//! and the image it brought is forgotten again.

use std::path::Path;

use anyhow::{Context, Result};
use runv_image::{import_path, ImportOptions, Imported, Store};

pub fn load(root: &Path, input: &Path) -> Result<()> {
    let store = super::open_store(root)?;
    std::fs::metadata(input).with_context(|| format!("image archive {}", input.display()))?;
    let imported = import_checked(&store, input)?;
    for name in &imported.names {
        println!("Loaded image: {name}");
    }
    if imported.names.is_empty() {
        println!("Loaded image ID: {}", imported.record.manifest);
    }
    Ok(())
}

/// Imports `path` and extracts its layers; on an extraction error the names the import
/// gave are removed and the store collected, so nothing of the image stays.
pub fn import_checked(store: &Store, path: &Path) -> Result<Imported> {
    let imported = import_path(store, path, &ImportOptions::default())
        .with_context(|| format!("loading {}", path.display()))?;
    let name = imported
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| imported.record.manifest.to_string());
    let extracted = store
        .image(&name)
        .and_then(|img| store.layers(&img))
        .with_context(|| format!("loading {}: image {name}", path.display()));
    if let Err(e) = extracted {
        for n in &imported.names {
            let _ = store.untag(n);
        }
        if let Err(gc) = store.gc() {
            tracing::warn!(error = %gc, "could not collect the blobs of a rejected image");
        }
        return Err(e);
    }
    Ok(imported)
}
