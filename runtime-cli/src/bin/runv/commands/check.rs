//! `runv check`: one line per item (ok, warn or FAIL, with the fix); exit 0 only when no
//! item failed.

use std::io::Write;

use anyhow::Result;
use runv_runtime::check::{self, Item, Level};
use runv_runtime::config::{self, Sources};

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<i32> {
    let src = Sources::from_env(ctx.global.config.clone());
    let file = src
        .flag
        .as_ref()
        .or(src.env_config.as_ref())
        .unwrap_or(&src.default_config)
        .clone();
    let mut items = Vec::new();
    match config::resolve(&src) {
        Ok(c) => {
            let read = if file.exists() {
                "read"
            } else {
                "absent, defaults"
            };
            items.push(Item::new(
                "config",
                Level::Ok,
                format!("{} ({read}); runv-vmm {}", file.display(), c.vmm.display()),
            ));
            items.push(check::kvm(&c.vmm));
            items.push(check::kernel(&c.kernel));
            items.push(check::initrd(&c.initrd));
        }
        Err(e) => items.push(Item::new("config", Level::Fail, e.to_string())),
    }
    let proc_cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    items.push(check::cgroups(
        &runv_runtime::cgroups::host_hierarchies(),
        &proc_cgroups,
    ));
    items.push(check::network());
    items.push(check::state_root(&ctx.global.root));
    let failed = items.iter().filter(|i| i.level == Level::Fail).count();
    // A reader that stops early (`| head`) ends the output, not the verdict.
    let mut out = std::io::stdout().lock();
    for item in &items {
        let _ = writeln!(out, "{item}");
    }
    if failed > 0 {
        let _ = writeln!(
            out,
            "runv cannot run sandboxes here: {failed} item(s) failed"
        );
        return Ok(1);
    }
    let _ = writeln!(out, "runv can run sandboxes here");
    Ok(0)
}
