//! `runv list`: every container under --root.

use anyhow::Result;
use runv_runtime::oci::OciState;
use runv_runtime::sandbox;

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
        ListFormat::Table => print!("{}", table(&states)),
    }
    Ok(0)
}

/// runc's table: tab-aligned columns (tabwriter: minimum width 12, padding 3).
fn table(states: &[OciState]) -> String {
    let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from)];
    for s in states {
        rows.push([
            s.id.clone(),
            s.pid.to_string(),
            s.status.clone(),
            s.bundle.display().to_string(),
            s.created.clone(),
            s.owner.clone(),
        ]);
    }
    let mut widths = [12usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len() + 3);
        }
    }
    let mut out = String::new();
    for r in &rows {
        let last = r.len() - 1;
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_longest_cell() {
        let s = OciState {
            oci_version: "1.1.0".into(),
            id: "c1".into(),
            pid: 42,
            status: "running".into(),
            bundle: "/a/very/long/bundle/path".into(),
            rootfs: "/r".into(),
            created: "2026-01-01T00:00:00Z".into(),
            annotations: Default::default(),
            owner: "root".into(),
        };
        let t = table(&[s]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("ID          PID         STATUS      BUNDLE"),
            "{t}"
        );
        let col = lines[0].find("CREATED").unwrap();
        assert_eq!(&lines[1][col..col + 4], "2026", "{t}");
        assert!(lines[1].ends_with("root"));
    }
}
