//! Imports an image and prepares a bundle from it, printing what took how long: a manual
//! check against real images and the source of the figures in docs/images.md.
//!
//!   cargo run -p runv-image --example image_tool -- STATE_DIR IMAGE_PATH BUNDLE_DIR [NAME] [-- CMD...]

use std::time::Instant;

use anyhow::{bail, Context, Result};
use runv_image::{import_path, prepare_bundle, ImportOptions, Overrides, Store};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (positional, cmd) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let [state, path, bundle, rest @ ..] = positional else {
        bail!("usage: image_tool STATE_DIR IMAGE_PATH BUNDLE_DIR [NAME] [-- CMD...]");
    };
    let store = Store::open(state).with_context(|| format!("opening store {state}"))?;
    let t = Instant::now();
    let opts = ImportOptions {
        name: rest.first().cloned(),
        ..ImportOptions::default()
    };
    let imported =
        import_path(&store, path.as_ref(), &opts).with_context(|| format!("importing {path}"))?;
    println!(
        "import: {:?} in {:.3}s as {:?}",
        imported.record.manifest,
        t.elapsed().as_secs_f64(),
        imported.names
    );
    let img = store.image(&imported.names[0])?;
    let t = Instant::now();
    let layers = store.layers(&img)?;
    println!(
        "extract {} layers: {:.3}s",
        layers.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let ov = Overrides {
        args: cmd,
        ..Overrides::default()
    };
    let spec = prepare_bundle(&store, &img, bundle.as_ref(), &ov)
        .with_context(|| format!("preparing {bundle}"))?;
    println!(
        "bundle: {:.3}s, args {:?}",
        t.elapsed().as_secs_f64(),
        spec.process().as_ref().and_then(|p| p.args().clone())
    );
    Ok(())
}
