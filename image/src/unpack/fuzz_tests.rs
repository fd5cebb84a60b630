//! Random hostile layers: names with `..`, absolute paths, symlinks to the outside (by
//! absolute host path, by `..`, by chains), hard links, whiteouts, in random order over two
//! layers. Whatever happens, extraction and application either succeed or fail with an
//! error, and nothing appears outside the scratch root.

use super::tests::TarBuilder;
use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn random_path(rng: &mut Rng, outside: &str) -> String {
    let parts = [
        "a", "b", "..", ".", "link", "up", "abs", "x", "var", "run", outside,
    ];
    let n = 1 + rng.next() % 4;
    let mut p = String::new();
    if rng.next() % 4 == 0 {
        p.push('/');
    }
    for i in 0..n {
        if i > 0 {
            p.push('/');
        }
        p.push_str(rng.pick(&parts).trim_start_matches('/'));
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
    for _ in 0..(1 + rng.next() % 12) {
        let path = random_path(rng, outside);
        if path.len() >= 99 {
            continue;
        }
        match rng.next() % 7 {
            0 | 1 => {
                tb.file(&path, b"pwned");
            }
            2 => {
                tb.dir(&path);
            }
            3 | 4 => {
                tb.symlink(&path, rng.pick(&link_targets));
            }
            5 => {
                let target = random_path(rng, outside);
                if target.len() < 99 {
                    tb.hardlink(&path, &target);
                }
            }
            _ => {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
                let wh = if rng.next() % 2 == 0 {
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
    let mut rng = Rng(0x5eed_1234_abcd_0001);
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
            "round {round}: outside changed"
        );
        let victim = std::fs::metadata(outside.join("victim")).unwrap();
        assert_eq!(
            (victim.len(), std::os::unix::fs::MetadataExt::nlink(&victim)),
            (1, 1),
            "round {round}"
        );
        assert_eq!(
            std::fs::read(outside.join("victim")).unwrap(),
            b"v",
            "round {round}"
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
            "round {round}: files next to the root"
        );
        assert_eq!(list(&t.path().join("l1")), ["l2"], "round {round}");
        assert_eq!(list(t.path()), ["l1"], "round {round}");
        for n in ["a", "b", "x", "link", "up", "abs", "victim"] {
            assert!(
                !std::path::Path::new("/").join(n).exists(),
                "round {round}: /{n} appeared"
            );
        }
    }
}
