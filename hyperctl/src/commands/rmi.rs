//! `hyperctl rmi IMAGE`: forget a name (refused while a container uses the image), then
//! collect the blobs and layers no image uses any more.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::containers::Containers;

pub fn rmi(root: &Path, name: &str) -> Result<()> {
    let store = super::open_store(root)?;
    let image = store.image(name).with_context(|| format!("rmi {name}"))?;
    let manifest = image.record.manifest.to_string();
    // Another name for the same manifest keeps the image alive; a container only blocks
    // the removal of its image's last name.
    let other_names = store
        .images()?
        .into_iter()
        .filter(|(n, r)| *n != image.name && r.manifest == image.record.manifest)
        .count();
    if other_names == 0 {
        let users: Vec<String> = Containers::new(root)
            .list()?
            .into_iter()
            .filter(|c| c.manifest == manifest)
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            bail!(
                "image {} is used by container(s) {}; remove them first (hyperctl rm)",
                image.name,
                users.join(", ")
            );
        }
    }
    store
        .untag(&image.name)
        .with_context(|| format!("rmi {name}"))?;
    println!("Untagged: {}", image.name);
    let stats = store.gc().context("collecting unused blobs and layers")?;
    if stats.blobs_removed > 0 {
        println!("Deleted: {manifest}");
    }
    tracing::debug!(?stats, "gc");
    Ok(())
}
