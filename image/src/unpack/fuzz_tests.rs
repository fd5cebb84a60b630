//! Random hostile layers: names with `..`, absolute paths, symlinks to the outside (by
//! absolute host path, by `..`, by chains), hard links, whiteouts, in random order over two
//! layers. Whatever happens, extraction and application either succeed or fail with an
//! error, and nothing appears outside the scratch root.

use super::tests::TarBuilder;
use super::*;

type Rng = fastrand::Rng;

fn pick<'a>(rng: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs[rng.usize(..xs.len())]
}

fn random_path(rng: &mut Rng, outside: &str) -> String {
    let parts = [
        "a", "b", "..", ".", "link", "up", "abs", "x", "var", "run", outside,
    ];
    let n = rng.usize(1..=4);
    let mut p = String::new();
    if rng.usize(..4) == 0 {
        p.push('/');
    }
    for i in 0..n {
        if i > 0 {
            p.push('/');
        }
        p.push_str(pick(rng, &parts).trim_start_matches('/'));
    }
    p
}

fn random_layer(rng: &mut Rng, outside: &str) -> Vec<u8> {
    let mut tb = TarBuilder::default();
    let link_targets = [
        outside,
        "/",
        "..",
        "../..",
        "../../../../..",
        "a",
        "/a/b",
        "up",
        "link",
        "abs/x",
    ];
    for _ in 0..rng.usize(1..=12) {
        let path = random_path(rng, outside);
        if path.len() >= 99 {
            continue;
        }
        match rng.usize(..7) {
            0 | 1 => {
                tb.file(&path, b"pwned");
            }
            2 => {
                tb.dir(&path);
            }
            3 | 4 => {
                tb.symlink(&path, pick(rng, &link_targets));
            }
            5 => {
                let target = random_path(rng, outside);
                if target.len() < 99 {
                    tb.hardlink(&path, &target);
                }
            }
            _ => {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                let wh = if rng.bool() {
                    ".wh..wh..opq".to_string()
                } else {
                    format!(".wh.{name}")
                };
                let p = if dir.is_empty() {
                    wh
                } else {
                    format!("{dir}/{wh}")
                };
                if p.len() < 99 {
                    tb.file(&p, b"");
                }
            }
        }
    }
    tb.finish()
}

#[test]
fn random_hostile_layers_stay_inside() {
    const SEED: u64 = 0x5eed_1234_abcd_0001;
    let mut rng = Rng::with_seed(SEED);
    let opts = UnpackOptions { privileged: false };
    for round in 0..300 {
        // Two levels above the scratch root, so that a `..` escape would show.
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("l1/l2");
        std::fs::create_dir_all(&base).unwrap();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"v").unwrap();
        let rootfs = base.join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let outside_s = outside.to_str().unwrap().to_string();
        for i in 0..2 {
            let tar = random_layer(&mut rng, &outside_s);
            let dir = base.join(format!("layer{i}"));
            std::fs::create_dir(&dir).unwrap();
            let Ok(changes) = extract_layer(&tar[..], &dir, opts) else {
                break;
            };
            if apply_layer(&dir, &changes, &rootfs, opts).is_err() {
                break;
            }
        }
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("victim")],
            "seed {SEED:#x} round {round}: outside changed"
        );
        let victim = std::fs::metadata(outside.join("victim")).unwrap();
        assert_eq!(
            (victim.len(), std::os::unix::fs::MetadataExt::nlink(&victim)),
            (1, 1),
            "seed {SEED:#x} round {round}"
        );
        assert_eq!(
            std::fs::read(outside.join("victim")).unwrap(),
            b"v",
            "seed {SEED:#x} round {round}"
        );
        let list = |p: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v.retain(|n| !n.starts_with("layer"));
            v
        };
        assert_eq!(
            list(&base),
            ["outside", "rootfs"],
            "seed {SEED:#x} round {round}: files next to the root"
        );
        assert_eq!(
            list(&t.path().join("l1")),
            ["l2"],
            "seed {SEED:#x} round {round}"
        );
        assert_eq!(list(t.path()), ["l1"], "seed {SEED:#x} round {round}");
        for n in ["a", "b", "x", "link", "up", "abs", "victim"] {
            assert!(
                !std::path::Path::new("/").join(n).exists(),
                "seed {SEED:#x} round {round}: /{n} appeared"
            );
        }
    }
}
