//! `runv check`: whether runv can run sandboxes on this host, one line per item, each
//! failure with its fix (like `kata-runtime check`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cgroups::Hierarchy;

/// The oldest guest kernel runv's agent works with (virtio-fs, vsock, cgroup v2 as the
/// agent uses them).
pub const MIN_KERNEL: (u32, u32) = (5, 10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, with less than runv can do (a missing limit, an unknown build).
    Warn,
    /// runv cannot run sandboxes here until it is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: &'static str,
    pub level: Level,
    pub text: String,
}

impl Item {
    pub fn new(name: &'static str, level: Level, text: impl Into<String>) -> Self {
        Item {
            name,
            level,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level:<5} {:<11} {}", self.name, self.text)
    }
}

/// The KVM line, from `runv-vmm --check-kvm` (the VMM owns what KVM must offer).
pub fn kvm(vmm: &Path) -> Item {
    match std::process::Command::new(vmm).arg("--check-kvm").output() {
        Ok(out) if out.status.success() => Item::new(
            "kvm",
            Level::Ok,
            String::from_utf8_lossy(&out.stdout).trim(),
        ),
        Ok(out) => Item::new(
            "kvm",
            Level::Fail,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("runv-vmm: "),
        ),
        Err(e) => Item::new(
            "kvm",
            Level::Fail,
            format!("running {} --check-kvm: {e}", vmm.display()),
        ),
    }
}

/// The `Linux version X.Y.Z...` banner in a kernel image, if it is readable there (an
/// uncompressed vmlinux holds it as text).
pub fn kernel_banner(image: &[u8]) -> Option<String> {
    let at = memchr::memmem::find(image, b"Linux version ")?;
    let rest = &image[at..];
    let end = rest
        .iter()
        .position(|&b| b == 0 || b == b'\n')
        .unwrap_or(rest.len())
        .min(200);
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Major and minor of a banner's version ("Linux version 6.1.192-runv ..." -> (6, 1)).
pub fn banner_version(banner: &str) -> Option<(u32, u32)> {
    let v = banner.strip_prefix("Linux version ")?.split(' ').next()?;
    let mut parts = v.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The guest kernel line.
pub fn kernel(path: &Path) -> Item {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Item::new("kernel", Level::Fail, format!("{}: {e}", path.display())),
    };
    let Some(banner) = kernel_banner(&bytes) else {
        return Item::new(
            "kernel",
            Level::Warn,
            format!(
                "{}: no version banner (a compressed image?); runv's is an ELF vmlinux \
                 built by guest-kernel/build.sh",
                path.display()
            ),
        );
    };
    let version = banner.split(' ').nth(2).unwrap_or_default().to_owned();
    match banner_version(&banner) {
        Some(v) if v < MIN_KERNEL => Item::new(
            "kernel",
            Level::Fail,
            format!(
                "{}: Linux {version}, older than {}.{}: build runv's with guest-kernel/build.sh",
                path.display(),
                MIN_KERNEL.0,
                MIN_KERNEL.1
            ),
        ),
        Some(_) if version.ends_with("-runv") => Item::new(
            "kernel",
            Level::Ok,
            format!("{}: Linux {version}", path.display()),
        ),
        Some(_) => Item::new(
            "kernel",
            Level::Warn,
            format!(
                "{}: Linux {version}, not built by guest-kernel/build.sh (it needs virtio-mmio, \
                 virtio-fs, vsock and virtio-net built in)",
                path.display()
            ),
        ),
        None => Item::new(
            "kernel",
            Level::Warn,
            format!("{}: unreadable version in {banner:?}", path.display()),
        ),
    }
}

/// The names in a newc cpio archive (`070701`/`070702`), or why it is not one.
pub fn cpio_names(archive: &[u8]) -> Result<Vec<String>, String> {
    let hex = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
    };
    let pad4 = |n: usize| n.div_ceil(4) * 4;
    let mut names = Vec::new();
    let mut at = 0;
    loop {
        let header = archive
            .get(at..at + 110)
            .ok_or_else(|| format!("truncated at byte {at}"))?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(format!("no newc cpio header at byte {at}"));
        }
        let field = |i: usize| hex(&header[6 + 8 * i..14 + 8 * i]);
        let (Some(file_size), Some(name_size)) = (field(6), field(11)) else {
            return Err(format!("a bad header field at byte {at}"));
        };
        let name = archive
            .get(at + 110..at + 110 + name_size.saturating_sub(1))
            .ok_or_else(|| format!("truncated name at byte {at}"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if name == "TRAILER!!!" {
            return Ok(names);
        }
        names.push(name);
        at = pad4(at + 110 + name_size) + pad4(file_size);
    }
}

/// The agent initramfs line.
pub fn initrd(path: &Path) -> Item {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Item::new("initrd", Level::Fail, format!("{}: {e}", path.display())),
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Item::new(
            "initrd",
            Level::Warn,
            format!(
                "{}: gzip-compressed, not looked into; runv's is an uncompressed cpio",
                path.display()
            ),
        );
    }
    match cpio_names(&bytes) {
        Ok(names) if names.iter().any(|n| n == "init" || n == "./init") => Item::new(
            "initrd",
            Level::Ok,
            format!("{}: cpio, {} entries, /init", path.display(), names.len()),
        ),
        Ok(_) => Item::new(
            "initrd",
            Level::Fail,
            format!(
                "{}: no /init: build it with `source scripts/lib.sh; build_initramfs \
                 \"$(agent/build.sh)\" agent`",
                path.display()
            ),
        ),
        Err(e) => Item::new(
            "initrd",
            Level::Fail,
            format!("{}: not a cpio archive ({e})", path.display()),
        ),
    }
}

/// The cgroup line: where the sandbox's host cgroup goes, and whether its bounds can be
/// set. `proc_cgroups` is `/proc/cgroups` (which controllers sit on a v1 hierarchy).
pub fn cgroups(hierarchies: &[Hierarchy], proc_cgroups: &str) -> Item {
    if hierarchies.is_empty() {
        return Item::new(
            "cgroups",
            Level::Fail,
            "no cgroup hierarchy mounted: mount cgroup2 at /sys/fs/cgroup",
        );
    }
    let has = |ctl: &str| {
        let on_v1 = proc_cgroups.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4 && f[0] == ctl && f[1] != "0" && f[3] == "1"
        });
        on_v1
            || hierarchies.iter().any(|h| {
                h.fs_type == "cgroup2"
                    && crate::cgroups::lists(&h.mount_point.join("cgroup.controllers"), ctl)
            })
    };
    let (memory, pids) = (has("memory"), has("pids"));
    let layout = match (
        hierarchies.iter().any(|h| h.fs_type == "cgroup2"),
        hierarchies.iter().any(|h| h.fs_type == "cgroup"),
    ) {
        (true, false) => "v2",
        (true, true) => "hybrid (v1 controllers and v2)",
        _ => "v1",
    };
    let writable = hierarchies
        .iter()
        .any(|h| nix::unistd::access(&h.mount_point, nix::unistd::AccessFlags::W_OK).is_ok());
    let shown = hierarchies
        .iter()
        .find(|h| h.fs_type == "cgroup2")
        .unwrap_or(&hierarchies[0]);
    let mount = shown.mount_point.display();
    match (writable, memory && pids) {
        (false, _) => Item::new(
            "cgroups",
            Level::Fail,
            format!("{layout} at {mount}: not writable here (run runv as root)"),
        ),
        (true, true) => Item::new(
            "cgroups",
            Level::Ok,
            format!("{layout} at {mount}: memory and pids controllers"),
        ),
        (true, false) => Item::new(
            "cgroups",
            Level::Warn,
            format!(
                "{layout} at {mount}: no {} controller: sandboxes run without that host bound",
                if memory { "pids" } else { "memory" }
            ),
        ),
    }
}

/// The host networking line (taps, ingress qdiscs, u32 filters, mirred redirects).
pub fn network() -> Item {
    match crate::network::self_test() {
        Ok(()) => Item::new(
            "network",
            Level::Ok,
            "taps, ingress qdiscs and u32 + mirred redirects work (tried in a namespace of its own)",
        ),
        Err(e) => Item::new(
            "network",
            Level::Fail,
            format!(
                "{e}: sandboxes with a network namespace need /dev/net/tun and the sch_ingress, \
                 cls_u32 and act_mirred modules"
            ),
        ),
    }
}

/// The state root line: absent (made 0700 on first use), or private to its owner.
pub fn state_root(root: &Path) -> Item {
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Item::new(
            "state root",
            Level::Ok,
            format!("{}: absent; runv makes it 0700", root.display()),
        ),
        Err(e) => Item::new(
            "state root",
            Level::Fail,
            format!("{}: {e}", root.display()),
        ),
        Ok(m) if !m.is_dir() => Item::new(
            "state root",
            Level::Fail,
            format!("{}: not a directory", root.display()),
        ),
        Ok(m) if m.mode() & 0o022 != 0 || m.uid() != nix::unistd::geteuid().as_raw() => Item::new(
            "state root",
            Level::Fail,
            format!(
                "{}: mode {:o}, owner uid {}: others could change runv's state; \
                 `chown {} {0} && chmod 0700 {0}`",
                root.display(),
                m.mode() & 0o7777,
                m.uid(),
                nix::unistd::geteuid(),
            ),
        ),
        Ok(m) if m.mode() & 0o077 != 0 => Item::new(
            "state root",
            Level::Warn,
            format!(
                "{}: mode {:o}; runv's sandboxes stay private, but 0700 is what runv makes",
                root.display(),
                m.mode() & 0o7777
            ),
        ),
        Ok(_) => Item::new("state root", Level::Ok, format!("{}: 0700", root.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The KVM line is runv-vmm's own verdict, passed on.
    #[test]
    fn the_kvm_line_relays_the_vmm() {
        let t = tempfile::tempdir().unwrap();
        let vmm = t.path().join("fake-vmm");
        let script = |body: &str| {
            std::fs::write(
                &vmm,
                format!("#!/bin/sh\n[ \"$1\" = --check-kvm ] || exit 9\n{body}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // A test thread that forks while the script is open for writing makes exec fail
        // with ETXTBSY for a moment: retried, a bounded number of times.
        let relay = || {
            for _ in 0..50 {
                let item = kvm(&vmm);
                if !item.text.contains("Text file busy") {
                    return item;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            panic!("{} stayed busy", vmm.display());
        };
        script("echo '/dev/kvm: KVM API 12, kvm_amd'");
        assert_eq!(
            relay(),
            Item::new("kvm", Level::Ok, "/dev/kvm: KVM API 12, kvm_amd")
        );
        script("echo 'runv-vmm: /dev/kvm on this host is provided by kvm_pvm' >&2; exit 1");
        assert_eq!(
            relay(),
            Item::new(
                "kvm",
                Level::Fail,
                "/dev/kvm on this host is provided by kvm_pvm"
            )
        );
        let gone = kvm(&t.path().join("none"));
        assert!(gone.level == Level::Fail && gone.text.contains("none --check-kvm"));
    }

    #[test]
    fn banners_and_versions() {
        let mut image = vec![0u8; 64];
        image.extend_from_slice(b"Linux version 6.1.192-runv (runv@runv) (gcc) #1 SMP\n\0rest");
        let b = kernel_banner(&image).unwrap();
        assert_eq!(b, "Linux version 6.1.192-runv (runv@runv) (gcc) #1 SMP");
        assert_eq!(banner_version(&b), Some((6, 1)));
        assert_eq!(banner_version("Linux version 5.4-rc1 x"), Some((5, 4)));
        assert_eq!(banner_version("Linux version x.y"), None);
        assert!(kernel_banner(b"no banner").is_none());
    }

    #[test]
    fn kernel_lines() {
        let t = tempfile::tempdir().unwrap();
        let write = |name: &str, banner: &str| {
            let p = t.path().join(name);
            std::fs::write(&p, format!("\x7fELF....Linux version {banner} (x) #1\n")).unwrap();
            p
        };
        assert_eq!(kernel(&write("a", "6.1.192-runv")).level, Level::Ok);
        assert_eq!(kernel(&write("b", "6.6.1")).level, Level::Warn);
        let old = kernel(&write("c", "4.19.0-runv"));
        assert_eq!(old.level, Level::Fail);
        assert!(old.text.contains("older than 5.10"), "{}", old.text);
        let missing = kernel(&t.path().join("nope"));
        assert!(missing.level == Level::Fail && missing.text.contains("nope"));
    }

    /// A newc archive of `names` (empty files), as the initramfs builder writes.
    fn newc(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for name in names.iter().chain(["TRAILER!!!"].iter()) {
            let mut h = format!("070701{:08X}{:08X}", 1, 0o100644);
            for _ in 0..4 {
                h.push_str("00000000");
            }
            h.push_str("00000000"); // file size
            for _ in 0..4 {
                h.push_str("00000000");
            }
            h.push_str(&format!("{:08X}", name.len() + 1));
            h.push_str("00000000");
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn cpio_archives() {
        assert_eq!(
            cpio_names(&newc(&["init", "bin/runv-agent"])).unwrap(),
            ["init", "bin/runv-agent"]
        );
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("initrd");
        std::fs::write(&p, newc(&[".", "init"])).unwrap();
        assert_eq!(initrd(&p).level, Level::Ok);
        std::fs::write(&p, newc(&["bin"])).unwrap();
        let no_init = initrd(&p);
        assert!(no_init.level == Level::Fail && no_init.text.contains("no /init"));
        std::fs::write(
            &p,
            b"garbage that is long enough to hold a header, or nearly so",
        )
        .unwrap();
        assert_eq!(initrd(&p).level, Level::Fail);
        let mut truncated = newc(&["init"]);
        truncated.truncate(120);
        assert!(cpio_names(&truncated).unwrap_err().contains("truncated"));
    }

    #[test]
    fn state_roots() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        assert_eq!(state_root(&root).level, Level::Ok);
        std::fs::create_dir(&root).unwrap();
        for (mode, level) in [
            (0o700, Level::Ok),
            (0o711, Level::Warn),
            (0o777, Level::Fail),
        ] {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(state_root(&root).level, level, "{mode:o}");
        }
        std::fs::write(t.path().join("file"), b"").unwrap();
        assert_eq!(state_root(&t.path().join("file")).level, Level::Fail);
    }

    #[test]
    fn cgroup_layouts() {
        assert_eq!(cgroups(&[], "").level, Level::Fail);
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let v2 = [Hierarchy {
            mount_point: t.path().into(),
            fs_type: "cgroup2".into(),
        }];
        let item = cgroups(&v2, "");
        assert_eq!(item.level, Level::Ok, "{item}");
        assert!(item.text.starts_with("v2 at"), "{item}");
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let item = cgroups(&v2, "");
        assert!(
            item.level == Level::Warn && item.text.contains("no pids"),
            "{item}"
        );
        // On a hybrid host pids sits on a v1 hierarchy (hierarchy id > 0, enabled).
        let proc = "#subsys_name\thierarchy\tnum_cgroups\tenabled\npids\t9\t120\t1\n";
        assert_eq!(cgroups(&v2, proc).level, Level::Ok);
    }
}
