//! `hyperctl images`: the store's named images as a table.

use std::path::Path;

use anyhow::Result;

pub fn images(root: &Path) -> Result<()> {
    let store = super::open_store(root)?;
    let now = chrono::Utc::now();
    let mut rows = vec![vec![
        "REPOSITORY".to_string(),
        "TAG".into(),
        "DIGEST".into(),
        "SIZE".into(),
        "CREATED".into(),
    ]];
    for (name, rec) in store.images()? {
        let (repo, tag) = split_name(&name);
        let digest = rec.manifest.to_string();
        rows.push(vec![
            repo,
            tag,
            short_digest(&digest),
            human_size(rec.size),
            rec.created
                .as_deref()
                .map_or_else(|| "-".into(), |c| super::age(c, now)),
        ]);
    }
    super::print_table(&rows);
    Ok(())
}

/// `registry/repo:tag` -> (`registry/repo`, `tag`); a digest-only name has neither.
fn split_name(name: &str) -> (String, String) {
    if name.starts_with("sha256:") {
        return ("<none>".into(), "<none>".into());
    }
    let (base, _) = name.split_once('@').unwrap_or((name, ""));
    let slash = base.rfind('/').map_or(0, |i| i + 1);
    match base[slash..].rfind(':') {
        Some(i) => (base[..slash + i].into(), base[slash + i + 1..].into()),
        None => (base.into(), "<none>".into()),
    }
}

/// `sha256:` and the first 12 hex digits.
fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// Decimal units, as docker prints sizes.
fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.3}", v = (v * 100.0).round() / 100.0)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[u]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split() {
        let s = split_name;
        assert_eq!(
            s("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox".into(), "latest".into())
        );
        assert_eq!(
            s("localhost:5000/x:1"),
            ("localhost:5000/x".into(), "1".into())
        );
        assert_eq!(
            s("localhost:5000/x"),
            ("localhost:5000/x".into(), "<none>".into())
        );
        assert_eq!(
            s(&format!("docker.io/a/b@sha256:{}", "0".repeat(64))),
            ("docker.io/a/b".into(), "<none>".into())
        );
        assert_eq!(
            s(&format!("sha256:{}", "0".repeat(64))),
            ("<none>".into(), "<none>".into())
        );
    }

    #[test]
    fn sizes_and_digests() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2_345_678), "2.35MB");
        assert_eq!(human_size(5_000_000_000), "5GB");
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
    }
}
